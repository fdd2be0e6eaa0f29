"""setup's answers: each bad one stops the run with one line naming the option."""

from __future__ import annotations

import pytest

from scanmail.admin.answers import check_user, domain_of, fresh_defaults, gather, parse_relay
from scanmail.errors import ConfigError, ExitCode

BIN = "/opt/scanmail/bin"


@pytest.mark.parametrize(("text", "expected"), [
    ("mail.example.lan", ("mail.example.lan", 25)),
    ("mail.example.lan:2525", ("mail.example.lan", 2525)),
    ("192.0.2.7:587", ("192.0.2.7", 587)),
    ("[2001:db8::7]:26", ("2001:db8::7", 26)),
    ("2001:db8::7", ("2001:db8::7", 25)),
    ("mail.example.lan.", ("mail.example.lan", 25)),
])
def test_relay_host_is_host_and_optional_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_relay(text) == expected


@pytest.mark.parametrize("text", ["", "mail example", "mail.example.lan:0", "host:99999",
                                  "host:smtp", "-bad-.example", "[2001:db8::7]x", "a:b:c"])
def test_an_unparseable_relay_host_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_relay(text)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert str(caught.value).startswith(f"--relay-host {text!r}: not HOST[:PORT]")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["Scanmail", "1abc", "a b", "x" * 33, "", "sc;rm"])
def test_a_bad_user_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a user name"):
        check_user(name)


def test_each_answer_names_its_option() -> None:
    for option, value, said in [
        ("listen", "0.0.0.0", "--listen '0.0.0.0' must be ADDRESS:PORT"),
        ("admin_email", "postmaster", "--admin-email 'postmaster' must be an e-mail address"),
        ("spool", "var/spool", "--spool 'var/spool': must be an absolute path"),
        ("spool", "/var/spool smtpd", "--spool '/var/spool smtpd': must be an absolute path"),
        ("hostname", "gw_1", "--hostname 'gw_1': not a host name"),
        ("local_domains", "corp.example, bad..x", "'bad..x' is not a domain name"),
        ("clamd_socket", "clamd.ctl", "--clamd-socket 'clamd.ctl' must be an absolute"),
    ]:
        with pytest.raises(ConfigError) as caught:
            gather(bin_dir=BIN, **{option: value})
        assert said in str(caught.value), option


def test_given_answers_become_settings_and_guesses_only_defaults() -> None:
    answers = gather(bin_dir=BIN, hostname="gw.corp.example", relay_host="mail.corp.example",
                     local_domains="corp.example,.sub.corp.example", clamd_conf="")
    assert answers.given == {
        "SPOOL_DIR": "/var/spool/smtpd", "HOSTNAME": "gw.corp.example",
        "LOCAL_DOMAINS": "corp.example .sub.corp.example", "RELAY_HOST": "mail.corp.example",
        "RELAY_PORT": "25", "CLAMD_CONF": "",
    }
    assert answers.defaults["ADMIN_EMAIL"] == "postmaster@corp.example"
    assert answers.defaults["LISTEN"] == "[::]:25"
    assert "LOCAL_DOMAINS" not in answers.defaults


def test_the_domain_is_guessed_from_the_host_name() -> None:
    assert domain_of("gw.corp.example") == "corp.example"
    assert domain_of("gateway.example") == "" and domain_of("vm") == ""
    defaults, notes = fresh_defaults({"HOSTNAME": "gw.corp.example"})
    assert defaults["LOCAL_DOMAINS"] == "corp.example"
    assert "gw.corp.example" in notes["LOCAL_DOMAINS"]
    defaults, notes = fresh_defaults({"HOSTNAME": "vm.local"})
    assert "LOCAL_DOMAINS" not in defaults and "refuses" in notes["LOCAL_DOMAINS"]
    assert "ADMIN_EMAIL" not in defaults and "postmaster@localhost" in notes["ADMIN_EMAIL"]
