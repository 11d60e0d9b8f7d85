"""Phone numbers as identity (flows/phones.py): an account phone, as a person typed it in
the panel, and the WhatsApp id of the same line must give the same key (SPEC §3)."""

from __future__ import annotations

import pytest

from flows.phones import phone_key, wa_id_key

# Buenos Aires mobile 11 5555-1234: WhatsApp writes it +54 9 11 5555-1234.
AR_WA_ID = "5491155551234"
# Córdoba mobile (351) 555-0000.
AR_CORDOBA_WA_ID = "5493515550000"
# Mexico City mobile 55 1234 5678, on a WhatsApp account old enough to keep the 1.
MX_WA_ID_OLD = "5215512345678"
MX_WA_ID_NEW = "525512345678"


@pytest.mark.parametrize(
    "written",
    [
        "+54 11 5555-1234",  # international, without the mobile 9
        "+54 9 11 5555-1234",  # international, as dialled to a mobile
        "+5491155551234",
        "0054 11 5555 1234",  # 00 as the international prefix
        "011 15 5555-1234",  # domestic: trunk 0 and the old mobile 15
        "011 5555-1234",
        "11 5555 1234",  # no prefix at all, read in Argentina
        "(11) 15-5555-1234",
    ],
)
def test_argentine_spellings_meet_the_whatsapp_id(written: str) -> None:
    key = phone_key(written, default_region="AR")
    assert key is not None
    assert key == wa_id_key(AR_WA_ID)


@pytest.mark.parametrize("written", ["+54 351 555-0000", "0351 15 555-0000", "351 555 0000"])
def test_argentine_numbers_outside_buenos_aires(written: str) -> None:
    assert phone_key(written) == wa_id_key(AR_CORDOBA_WA_ID) is not None


def test_argentine_landline_and_mobile_of_different_lines_differ() -> None:
    assert phone_key("+54 11 5555-1235") != wa_id_key(AR_WA_ID)
    assert phone_key("+54 351 555-0000") != phone_key("+54 11 5555-1234")


@pytest.mark.parametrize("wa_id", [MX_WA_ID_OLD, MX_WA_ID_NEW])
@pytest.mark.parametrize(
    "written", ["+52 55 1234 5678", "+52 1 55 1234 5678", "0052 55 1234 5678", "+525512345678"]
)
def test_mexican_spellings_meet_both_whatsapp_ids(written: str, wa_id: str) -> None:
    key = phone_key(written)
    assert key is not None
    assert key == wa_id_key(wa_id)


def test_mexican_local_number_read_in_mexico() -> None:
    assert phone_key("55 1234 5678", default_region="MX") == wa_id_key(MX_WA_ID_OLD)


def test_default_region_decides_numbers_without_country_code() -> None:
    # The same digits are a different line in each country.
    assert phone_key("55 1234 5678", default_region="AR") != phone_key(
        "55 1234 5678", default_region="MX"
    )


@pytest.mark.parametrize(
    ("written", "wa_id"),
    [
        ("+34 600 00 00 00", "34600000000"),  # Spain
        ("0034 600 000 000", "34600000000"),
        ("+1 (202) 555-0143", "12025550143"),  # United States
        ("+44 7700 900123", "447700900123"),  # United Kingdom
    ],
)
def test_other_countries_are_compared_as_they_are(written: str, wa_id: str) -> None:
    key = phone_key(written)
    assert key is not None
    assert key == wa_id_key(wa_id)
    # Nothing is stripped from them: the key is the E.164 number.
    assert key == wa_id


def test_a_us_number_starting_like_an_argentine_mobile_marker_is_left_alone() -> None:
    # +1 9… and +1 1… are not mobile markers; only 54 9 and 52 1 are.
    assert wa_id_key("19175550143") == "19175550143"


@pytest.mark.parametrize(
    "junk", ["", "   ", "abc", "no tengo", "12", "+", "00", "+999 123", "1234567890123456789"]
)
def test_junk_is_not_a_phone(junk: str) -> None:
    assert phone_key(junk) is None


@pytest.mark.parametrize("junk", ["", "abc", "54911-5555", "549 11 5555 1234", "0"])
def test_junk_is_not_a_whatsapp_id(junk: str) -> None:
    assert wa_id_key(junk) is None


def test_whatsapp_id_with_a_plus_is_accepted() -> None:
    assert wa_id_key("+" + AR_WA_ID) == wa_id_key(AR_WA_ID)
