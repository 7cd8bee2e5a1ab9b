"""Customers' contact data: canonical phones, masks and the keyed reference."""
import pytest

from shared.security.privacy import (redact, customer_ref, is_email, mask_contact, mask_email, mask_name, mask_phone,
                            normalize_phone)


@pytest.mark.parametrize("raw, expected", [
    ("13812346138", "13812346138"),
    ("+86 138 1234 6138", "13812346138"),
    ("86-138-1234-6138", "13812346138"),
    (" 138 1234 6138 ", "13812346138"),
    ("021-12345678", "02112345678"),
    ("(0755) 1234 5678", "075512345678"),
    ("+44 20 7946 0958", "+442079460958"),
])
def test_normalize_phone(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", ["12345", "abc", "2381234613", "12812346138", "1381234613", "138123461389",
                                 "+0 1234567", "", None, 13812346138])
def test_normalize_phone_rejects(raw):
    assert normalize_phone(raw) is None


def test_masks():
    assert mask_name("王女士") == "王**"
    assert mask_name("Anne Smith") == "A**"
    assert mask_phone("13812346138") == "138****6138"
    # Any other number: at least half its digits hidden, so a short one cannot be guessed.
    assert mask_phone("02112345678") == "02******678"
    assert mask_phone("+1234567") == "+1****67"
    assert mask_phone("+447911123456") == "+447******456"
    assert mask_phone("12345") == "1****"  # short numbers keep only their first digit
    assert mask_email("anne.smith@example.com") == "a***@example.com"
    assert mask_contact("anne@example.com") == "a***@example.com"
    assert mask_contact("13812346138") == "138****6138"
    assert mask_name(None) is None and mask_phone("") is None and mask_email(None) is None


@pytest.mark.parametrize("phone", ["+1234567", "+85291234567", "02112345678", "+123456789012345", "123456"])
def test_a_mask_hides_at_least_half_the_digits(phone):
    masked = mask_phone(phone)
    assert masked.count("*") * 2 >= sum(c.isdigit() for c in phone) and len(masked) == len(phone)


def test_redact_masks_the_name_however_written_and_each_part_of_it():
    text = "Dear Ms SMITH, we called Anne  Smith on +852 9123 4567."
    shown = redact(text, name="Anne Smith", phone="+85291234567")
    assert "smith" not in shown.lower() and "anne" not in shown.lower() and "9123" not in shown
    assert shown == "Dear Ms S**, we called A** on +85******567."
    assert redact("王女士，您好", name="王女士") == "王**，您好"


def test_is_email():
    assert is_email("anne@example.com")
    assert not is_email("anne@example") and not is_email("anne example.com") and not is_email(None)
    assert not is_email("a" * 250 + "@x.cn")


def test_customer_ref_is_keyed_and_stable():
    key = b"k" * 32
    ref = customer_ref(key, "13812346138")
    assert ref.startswith("c_") and len(ref) == 34
    assert "13812346138" not in ref
    assert customer_ref(key, "13812346138") == ref                         # same customer, same ref
    assert customer_ref(key, normalize_phone("+86 138 1234 6138")) == ref  # whatever the spelling
    assert customer_ref(key, "13812346139") != ref
    assert customer_ref(b"another key", "13812346138") != ref              # keyed: not a bare hash


def test_customer_ref_by_email_and_without_contact():
    key = b"k" * 32
    assert customer_ref(key, None, " Anne@Example.com ") == customer_ref(key, None, "anne@example.com")
    assert customer_ref(key, "13812346138", "anne@example.com") == customer_ref(key, "13812346138")
    assert customer_ref(key, None, None) is None
