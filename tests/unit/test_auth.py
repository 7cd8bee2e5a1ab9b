"""Signed tokens, roles and scope; who may do what (shared.security.permissions, intake's table)."""
import os
import stat
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.intake.policy import PERMISSIONS
from shared.security import auth
from shared.security.auth import Identity, TokenVerifier, ensure_dev_keys, issue_token, parse_ttl
from shared.security.permissions import Permissions
from shared.web.errors import Forbidden, Unauthorized
from shared.calendar.policy import load_policy


def key_pair() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


PRIVATE, PUBLIC = key_pair()


@pytest.fixture(scope="module")
def verifier() -> TokenVerifier:
    return TokenVerifier(PUBLIC, load_policy())


def token(**kwargs) -> str:
    options = {"role": "front_desk", "subject": "staff-1", "branch": "SH001", "private_key": PRIVATE}
    options.update(kwargs)
    return issue_token(**options)


def signed(claims: dict) -> str:
    """A token with hand-made claims, signed with the right key."""
    base = {"iss": "closeloop", "sub": "staff-1", "role": "front_desk", "scope": {"branch": "SH001"},
            "exp": int((datetime.now(timezone.utc) + timedelta(hours=1)).timestamp())}
    return jwt.encode({**base, **claims}, PRIVATE, algorithm="EdDSA")


def test_branch_scope(verifier):
    identity = verifier.identity(token(role="store_manager", subject="m-7", branch="SH001"))
    assert (identity.subject, identity.role, identity.branches) == ("m-7", "store_manager", frozenset({"SH001"}))
    assert identity.can_see("SH001") and not identity.can_see("SH002")


def test_region_scope_is_resolved_through_the_policy(verifier):
    identity = verifier.identity(token(role="regional_manager", branch=None, region="east"))
    assert identity.branches == frozenset({"SH001", "SH002"})
    assert identity.can_see("SH002") and not identity.can_see("BJ001")
    # A scope the chain policy does not know is no scope at all.
    with pytest.raises(Unauthorized, match="region has no branches"):
        verifier.identity(token(branch=None, region="atlantis"))
    with pytest.raises(Unauthorized, match="branch is not in the chain policy"):
        verifier.identity(token(branch="XX999"))


def test_all_branches_scope(verifier):
    identity = verifier.identity(token(role="hq_analyst", branch="*"))
    assert identity.branches is None
    assert identity.can_see("GZ001") and identity.can_see("XX999")


def test_expired_token_is_refused(verifier):
    old = token(now=datetime.now(timezone.utc) - timedelta(days=2), ttl=timedelta(days=1))
    with pytest.raises(Unauthorized, match="expired"):
        verifier.identity(old)


def test_token_signed_with_another_key_is_refused(verifier):
    forged = token(private_key=key_pair()[0])
    with pytest.raises(Unauthorized, match="invalid token"):
        verifier.identity(forged)


def test_tampered_claims_are_refused(verifier):
    header, payload, signature = token().split(".")
    other_payload = token(role="hq_admin", branch="*").split(".")[1]
    with pytest.raises(Unauthorized):
        verifier.identity(".".join((header, other_payload, signature)))


def test_unsigned_token_is_refused(verifier):
    unsigned = jwt.encode({"iss": "closeloop", "sub": "x", "role": "hq_admin", "scope": {"all": True},
                           "exp": 4102444800}, None, algorithm="none")
    with pytest.raises(Unauthorized):
        verifier.identity(unsigned)


@pytest.mark.parametrize("claims, message", [
    ({"iss": "someone-else"}, "invalid token"),
    ({"role": "superuser"}, "unknown role"),
    ({"role": None}, "unknown role"),
    ({"scope": "SH001"}, "unknown role or scope"),
    ({"scope": {"all": "yes"}}, "unknown scope"),
    ({"scope": {}}, "unknown scope"),
])
def test_bad_claims_are_refused(verifier, claims, message):
    with pytest.raises(Unauthorized, match=message):
        verifier.identity(signed(claims))


@pytest.mark.parametrize("missing", ["exp", "sub", "iss"])
def test_required_claims(verifier, missing):
    claims = jwt.decode(signed({}), PUBLIC, algorithms=["EdDSA"], issuer="closeloop")
    del claims[missing]
    with pytest.raises(Unauthorized):
        verifier.identity(jwt.encode(claims, PRIVATE, algorithm="EdDSA"))


def test_authorization_header(verifier):
    good = token()
    assert verifier.from_header(f"Bearer {good}").subject == "staff-1"
    assert verifier.from_header(f"bearer {good}").subject == "staff-1"
    for header in (None, "", "Bearer", "Bearer   ", f"Basic {good}", good):
        with pytest.raises(Unauthorized):
            verifier.from_header(header)
    with pytest.raises(Unauthorized, match="missing"):
        verifier.identity(None)


def test_issue_token_refuses_unknown_roles_and_unclear_scope():
    with pytest.raises(ValueError, match="unknown role"):
        token(role="janitor")
    with pytest.raises(ValueError, match="exactly one scope"):
        token(branch=None)
    with pytest.raises(ValueError, match="exactly one scope"):
        token(branch="SH001", region="east")


def test_issued_token_carries_expiry_and_scope():
    now = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)
    claims = jwt.decode(token(now=now, ttl=timedelta(hours=12), branch=None, region="east"), PUBLIC,
                        algorithms=["EdDSA"], options={"verify_exp": False})
    assert claims["exp"] - claims["iat"] == 12 * 3600
    assert claims["iat"] == int(now.timestamp())
    assert claims["scope"] == {"region": "east"} and claims["iss"] == "closeloop"


def test_require_names_the_roles_allowed():
    auditor = Identity(subject="a", role="auditor", branches=None, scope={"all": True})
    assert not PERMISSIONS.may(auditor, "complaint:create")
    with pytest.raises(Forbidden) as raised:
        PERMISSIONS.require(auditor, "sale:create")
    message = raised.value.message
    assert "auditor" in message and "sale:create" in message
    for role in ("branch_integration", "front_desk", "hq_admin", "store_manager"):
        assert role in message
    assert "aftercare_agent" not in message  # only the roles that may
    assert raised.value.status == 403 and raised.value.to_body()["error"]["code"] == "forbidden"
    front_desk = Identity(subject="f", role="front_desk", branches=frozenset({"SH001"}), scope={"branch": "SH001"})
    PERMISSIONS.require(front_desk, "sale:create")  # allowed: no error
    assert PERMISSIONS.may(front_desk, "complaint:create")


def test_intake_permission_table():
    assert PERMISSIONS.roles("sale:create") == {"front_desk", "store_manager", "branch_integration", "hq_admin"}
    assert PERMISSIONS.roles("complaint:create") == {"front_desk", "store_manager", "aftercare_agent",
                                                     "branch_integration", "hq_admin"}
    assert "hq_analyst" in PERMISSIONS.roles("complaint:read")
    # Reading a contact in clear is not for analysts, auditors or integrations.
    assert not PERMISSIONS.roles("contact:read") & {"hq_analyst", "auditor", "branch_integration"}
    # The access log is no longer intake's to grant.
    with pytest.raises(KeyError, match="access_log:read"):
        PERMISSIONS.roles("access_log:read")


def test_each_service_keeps_its_own_table_through_one_mechanism():
    auditor = Identity(subject="a", role="auditor", branches=None, scope={"all": True})
    table = Permissions({"access_log:read": {"auditor", "hq_admin"}})
    table.require(auditor, "access_log:read")
    assert table.may(auditor, "access_log:read") and table.roles("access_log:read") == {"auditor", "hq_admin"}
    with pytest.raises(KeyError):
        table.may(auditor, "complaint:create")  # an action the table does not name is no permission
    # The identity no longer carries a permission table of its own.
    assert not hasattr(Identity, "may") and not hasattr(Identity, "require")
    assert not hasattr(auth, "PERMISSIONS")


def test_a_table_naming_an_unknown_role_is_refused():
    with pytest.raises(ValueError, match="janitor"):
        Permissions({"complaint:read": {"front_desk", "janitor"}})
    with pytest.raises(ValueError, match="visit:read"):
        Permissions({"visit:read": ["aftercare_agent", "superuser"]})


@pytest.mark.parametrize("text, expected", [
    ("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)), ("30d", timedelta(days=30)),
    ("2w", timedelta(weeks=2)), ("45s", timedelta(seconds=45)), (" 7d ", timedelta(days=7)),
])
def test_parse_ttl(text, expected):
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["0d", "30", "d", "1.5h", "-1d", "30 days", "3y", ""])
def test_parse_ttl_rejects(text):
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_ensure_dev_keys_creates_a_matching_pair_once(tmp_path):
    keys = tmp_path / "keys"
    assert ensure_dev_keys(keys) == keys
    private, public = (keys / "jwt-private.pem").read_bytes(), (keys / "jwt-public.pem").read_bytes()
    assert stat.S_IMODE(os.stat(keys / "jwt-private.pem").st_mode) == 0o600
    assert sorted(p.name for p in keys.iterdir()) == ["grant-private.pem", "grant-public.pem",
                                                      "jwt-private.pem", "jwt-public.pem"]  # no leftovers
    ensure_dev_keys(keys)
    assert (keys / "jwt-private.pem").read_bytes() == private  # kept, not regenerated
    identity = TokenVerifier(public, load_policy()).identity(token(private_key=private))
    assert identity.role == "front_desk"


# -- ambiguous claims are refused (issue 7) --------------------------------------------------------

@pytest.mark.parametrize("claims, message", [
    ({"scope": {"all": True, "branch": "SH001"}}, "exactly one"),
    ({"scope": {"region": "east", "branch": "SH001"}}, "exactly one"),
    ({"scope": {"branch": "SH001", "note": "x"}}, "exactly one"),
    ({"scope": {"branch": ""}}, "unknown scope"),
    ({"scope": {"region": " "}}, "unknown scope"),
    ({"sub": ""}, "sub"),
    ({"sub": "   "}, "sub"),
    ({"exp": "4102444800"}, "exp"),
    ({"exp": 1e308}, "exp"),
    ({"exp": 4102444800.0}, "exp"),
    ({"exp": True}, "exp|expired"),
    # what the probe of issue 7 found giving 500s
    ({"exp": 10 ** 400}, "out of range|exp"),
    ({"exp": 10 ** 30}, "exp"),
    ({"sub": "fd\x00-1"}, "sub"),
    ({"sub": "fd\ud800"}, "sub"),
    ({"sub": "fd\u200b-1"}, "sub"),
    ({"sub": " fd-1"}, "sub"),
    ({"sub": "x" * 201}, "sub"),
])
def test_ambiguous_claims_are_refused(verifier, claims, message):
    with pytest.raises(Unauthorized, match=message):
        verifier.identity(signed(claims))


def test_a_malformed_token_is_refused_without_the_decoders_words(verifier):
    with pytest.raises(Unauthorized) as raised:
        verifier.identity("\xff\xfe.abc.def")
    assert raised.value.message == "invalid token: not a well-formed signed token"


def test_an_ambiguous_token_answers_401_in_the_error_shape(verifier):
    with pytest.raises(Unauthorized) as raised:
        verifier.from_header("Bearer " + signed({"scope": {"all": True, "branch": "SH001"}}))
    assert raised.value.status == 401
    assert raised.value.to_body()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("kwargs", [{"subject": ""}, {"subject": "  "}, {"subject": "a\x00b"}, {"branch": ""},
                                    {"branch": None, "region": ""}])
def test_issue_token_makes_only_valid_tokens(kwargs):
    with pytest.raises(ValueError):
        token(**kwargs)


def test_every_token_the_cli_can_issue_is_accepted(verifier, monkeypatch, tmp_path):
    from shared import cli

    monkeypatch.setenv("CLOSELOOP_JWT_PRIVATE_KEY", PRIVATE.decode())
    for scope in (["--branch", "SH001"], ["--region", "east"], ["--branch", "*"]):
        for subject in ([], ["--subject", "fd-9"]):
            out = tmp_path / "out"
            with open(out, "w") as stdout:
                monkeypatch.setattr("sys.stdout", stdout)
                assert cli.main(["token", "issue", "--role", "front_desk", *scope, *subject]) == 0
            identity = verifier.identity(out.read_text().strip())
            assert identity.subject == (subject[1] if subject else "front_desk")
    for bad in (["--branch", ""], ["--region", ""], ["--branch", "SH001", "--subject", " "]):
        assert cli.main(["token", "issue", "--role", "front_desk", *bad]) != 0


# -- grants: what goes on the bus instead of the user's token --------------------------------------

GRANT_PRIVATE, GRANT_PUBLIC = key_pair()


@pytest.fixture()
def grants() -> TokenVerifier:
    return TokenVerifier(PUBLIC, load_policy(), grant_key=GRANT_PUBLIC)


def test_a_grant_speaks_for_its_user_for_one_call_record_and_purpose(grants):
    user = grants.identity(token(role="investigator", subject="inv-3", branch="SH002"))
    grant = auth.issue_grant(user, call="intake.get_contact", record_id="r-1", purpose="call back",
                             private_key=GRANT_PRIVATE)
    who = grants.grant(grant, call="intake.get_contact", record_id="r-1", purpose="call back")
    assert (who.subject, who.role, who.branches) == ("inv-3", "investigator", frozenset({"SH002"}))
    for call, record, purpose in [("intake.other", "r-1", "call back"), ("intake.get_contact", "r-2", "call back"),
                                  ("intake.get_contact", "r-1", "something else")]:
        with pytest.raises(Unauthorized):
            grants.grant(grant, call=call, record_id=record, purpose=purpose)


def test_a_user_token_is_not_a_grant_and_a_grant_is_not_a_user_token(grants):
    user_token = token(role="investigator", branch="SH001")
    with pytest.raises(Unauthorized):
        grants.grant(user_token, call="intake.get_contact", record_id="r-1", purpose="call back")
    grant = auth.issue_grant(grants.identity(user_token), call="intake.get_contact", record_id="r-1",
                             purpose="call back", private_key=PRIVATE)  # even signed with the token key
    with pytest.raises(Unauthorized):
        grants.identity(grant)
    with pytest.raises(Unauthorized):  # the grant key is not the user key
        grants.grant(grant, call="intake.get_contact", record_id="r-1", purpose="call back")


def test_a_grant_is_short_and_ends_with_its_users_token(grants):
    now = datetime.now(timezone.utc)
    user = grants.identity(token(role="investigator", branch="SH001", ttl=timedelta(seconds=40)))
    grant = auth.issue_grant(user, call="c", record_id="r", purpose="p", private_key=GRANT_PRIVATE, now=now)
    assert jwt.decode(grant, options={"verify_signature": False})["exp"] == user.expires_at
    long = auth.issue_grant(user, call="c", record_id="r", purpose="p", private_key=GRANT_PRIVATE,
                            ttl=timedelta(hours=1), now=now)
    user_for_a_day = grants.identity(token(role="investigator", branch="SH001"))
    longer = auth.issue_grant(user_for_a_day, call="c", record_id="r", purpose="p", private_key=GRANT_PRIVATE,
                              ttl=timedelta(hours=1), now=now)
    with pytest.raises(Unauthorized, match="at most"):
        grants.grant(longer, call="c", record_id="r", purpose="p")
    assert grants.grant(long, call="c", record_id="r", purpose="p").subject
    old = auth.issue_grant(user_for_a_day, call="c", record_id="r", purpose="p", private_key=GRANT_PRIVATE,
                           now=now - timedelta(minutes=10))
    with pytest.raises(Unauthorized, match="expired"):
        grants.grant(old, call="c", record_id="r", purpose="p")
