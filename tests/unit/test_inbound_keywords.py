"""The opt-out keywords: the whole message, trimmed, any case, accents folded."""

from __future__ import annotations

import pytest

from inbound.keywords import is_opt_out


@pytest.mark.parametrize(
    "text",
    [
        "PARAR",
        "Parar",
        " parar ",
        "\tparar\n",
        "SAIR",
        "sair",
        "STOP",
        "Stop",
        "CANCELAR",
        "cancelár",
        "DESCADASTRAR",
        "descadastrar",
        "Descadástrar",
        "PÁRAR",
        "Parar!",
        "stop.",
        "\uff33\uff34\uff2f\uff30",  # full-width STOP, as some keyboards type it
    ],
)
def test_a_keyword_alone_is_an_opt_out(text: str) -> None:
    # GIVEN a message that is one opt-out keyword, however it is typed
    # WHEN it is read THEN it is an opt-out
    assert is_opt_out(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "não vou parar de comprar com vocês",
        "please stop by tomorrow",
        "Quero cancelar o pedido 123 e fazer outro",
        "PARAR AGORA",
        "parar parar",
        "sair?x",
        "PARA",
        "Parabéns",
        "",
        "   ",
        "Olá, tudo bem?",
    ],
)
def test_anything_but_a_keyword_alone_is_not_an_opt_out(text: str) -> None:
    # GIVEN a message that merely contains, resembles or lacks a keyword
    # WHEN it is read THEN it is not an opt-out
    assert is_opt_out(text) is False
