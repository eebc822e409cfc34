"""The Amazon RDS CA bundle ships inside pgconn, for sslmode=verify-full against Aurora."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from importlib.resources import as_file, files
from typing import Any

BUNDLE = files("pgconn") / "rds-global-bundle.pem"
SA_EAST_1_ROOTS = {
    "Amazon RDS sa-east-1 Root CA RSA2048 G1",
    "Amazon RDS sa-east-1 Root CA RSA4096 G1",
    "Amazon RDS sa-east-1 Root CA ECC384 G1",
}


def load_bundle() -> list[dict[str, Any]]:
    """The bundle's certificates as OpenSSL loads them for a client (libpq reads it the same)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with as_file(BUNDLE) as path:
        context.load_verify_locations(cafile=path)
    return context.get_ca_certs()


def subject(cert: dict[str, Any]) -> dict[str, str]:
    return {key: value for rdn in cert["subject"] for key, value in rdn}


def test_the_bundle_ships_inside_the_installed_pgconn_package() -> None:
    # GIVEN the installed pgconn package WHEN its bundle resource is looked up
    text = BUNDLE.read_text(encoding="ascii")

    # THEN it is there, and holds certificates
    assert BUNDLE.is_file()
    assert "-----BEGIN CERTIFICATE-----" in text


def test_every_certificate_in_the_bundle_loads_into_an_ssl_context() -> None:
    # GIVEN the bundle, its comment header included
    in_file = BUNDLE.read_text(encoding="ascii").count("-----BEGIN CERTIFICATE-----")

    # WHEN an SSL context loads it as its trust store
    loaded = load_bundle()

    # THEN it loads without error, and no certificate was skipped
    assert len(loaded) == in_file > 0


def test_every_certificate_is_an_amazon_rds_ca() -> None:
    # GIVEN the loaded bundle WHEN each subject is read
    subjects = [subject(cert) for cert in load_bundle()]

    # THEN each is Amazon RDS's, and nothing else is trusted
    assert {(s["organizationName"], s["organizationalUnitName"]) for s in subjects} == {
        ("Amazon Web Services, Inc.", "Amazon RDS")
    }


def test_the_bundle_holds_the_sa_east_1_roots() -> None:
    # GIVEN the loaded bundle WHEN its common names are listed
    names = {subject(cert)["commonName"] for cert in load_bundle()}

    # THEN São Paulo's RSA2048, RSA4096 and ECC384 roots are there
    assert names >= SA_EAST_1_ROOTS


def test_no_certificate_expires_before_2027() -> None:
    # GIVEN the loaded bundle WHEN each certificate's notAfter is read
    expiries = {
        subject(cert)["commonName"]: datetime.fromtimestamp(
            ssl.cert_time_to_seconds(cert["notAfter"]), tz=UTC
        )
        for cert in load_bundle()
    }

    # THEN none expires before 2027-01-01: a stale bundle fails here, not in production
    cutoff = datetime(2027, 1, 1, tzinfo=UTC)
    assert {name: when for name, when in expiries.items() if when < cutoff} == {}
