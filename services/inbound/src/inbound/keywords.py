"""The words that, sent alone, withdraw a lead's consent to WhatsApp messages."""

from __future__ import annotations

import unicodedata

OPT_OUT_KEYWORDS = frozenset({"PARAR", "SAIR", "STOP", "CANCELAR", "DESCADASTRAR"})
# Punctuation people type around a one-word answer ("Parar!", "stop.", "¿sair?").
SURROUNDING_PUNCTUATION = " \t\r\n.,;:!?¡¿\"'()[]*_~-"


def fold(text: str) -> str:
    """Upper-case the text with its accents removed ("cancelár" -> "CANCELAR")."""
    # NFKD splits "á" into "a" and a combining accent (and full-width letters into plain ones),
    # so dropping the combining marks leaves the bare letters people meant.
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return bare.upper()


def is_opt_out(text: str) -> bool:
    """Tell whether the whole message is an opt-out keyword, in any case and accents folded."""
    # Only a message that is the keyword alone counts: "não vou parar de comprar" or "stop by
    # tomorrow" are conversations, and opting someone out of a sale they asked about on a
    # substring would be as wrong as ignoring a real "PARAR". The keyword alone is the free and
    # easy procedure LGPD art. 8 §5 asks for, and the templates tell the lead what to send.
    return fold(text).strip(SURROUNDING_PUNCTUATION) in OPT_OUT_KEYWORDS
