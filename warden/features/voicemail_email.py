"""
Voicemail to email: each new message of a mailbox with an email address
(``wardenctl voicemail email NUMBER ADDRESS``, or the admin API) is sent there
with its audio attached, through the relay of ``[voicemail] smtp_*``
(L{warden.features.smtp}), in the background and tried again on failure; the
message itself is stored first, whatever becomes of the email.

    [voicemail]
    smtp_host = "mail.example.org"     # "" (the default): no email is sent
    smtp_port = 587
    smtp_from = "pbx@example.org"
    smtp_tls = "starttls"              # or "none" (a relay on this host/network)
    smtp_ca = ""                       # PEM bundle for the relay's certificate
    smtp_username = "pbx"              # AUTH, only after STARTTLS
    smtp_password_env = "WARDEN_SMTP_PASSWORD"   # or smtp_password_file; never inline
"""

from __future__ import annotations

import email.message
import email.utils
import time
from typing import Any

from twisted.internet.defer import Deferred

from warden.errors import ConfigError
from warden.features.smtp import (
    TLS_MODES,
    MailQueue,
    SmtpRelay,
    client_tls,
    is_email_address,
    is_host,
    send_mail,
)
from warden.model.voicemail import VoicemailMessage
from warden.rtp import g711
from warden.secrets import ENV_NAME, read_password

__all__ = ["SMTP_KEYS", "check_smtp", "mail_queue", "relay_of", "voicemail_email"]

#: The ``[voicemail]`` keys of the relay, with their defaults.
SMTP_KEYS: dict[str, Any] = {
    "smtp_host": "", "smtp_port": 25, "smtp_from": "", "smtp_tls": "starttls", "smtp_ca": "",
    "smtp_username": "", "smtp_password_env": "", "smtp_password_file": "",
}  # fmt: skip
#: Longest caller name put in a subject or body.
MAX_NAME = 64


def _fail(key: str, problem: str, value: object) -> ConfigError:
    return ConfigError(f"voicemail.{key}", f"{problem}, got {value!r}")


def check_smtp(table: dict[str, Any]) -> dict[str, Any]:
    """
    The relay keys of a ``[voicemail]`` table, checked (defaults filled in).

    Raises:
        ConfigError: a bad value, or keys that do not go together, naming the key.
    """
    if "smtp_password" in table:
        raise ConfigError(
            "voicemail.smtp_password",
            "a password is never written in the configuration:"
            " use smtp_password_env or smtp_password_file",
        )
    values = {key: table.get(key, default) for key, default in SMTP_KEYS.items()}
    for key, default in SMTP_KEYS.items():
        value = values[key]
        if type(value) is not type(default):
            kind = "an integer" if isinstance(default, int) else "a string"
            raise _fail(key, f"must be {kind}", value)
    host, port, sender = values["smtp_host"], values["smtp_port"], values["smtp_from"]
    if host and not is_host(host):
        raise _fail("smtp_host", "must be a host name or IP address, or empty", host)
    if not 1 <= port <= 65535:
        raise _fail("smtp_port", "must be a port 1..65535", port)
    if sender and not is_email_address(sender):
        raise _fail("smtp_from", "must be an email address", sender)
    if host and not sender:
        raise ConfigError("voicemail.smtp_from", "must be set when smtp_host is (the sender)")
    if values["smtp_tls"] not in TLS_MODES:
        raise _fail("smtp_tls", "must be starttls or none", values["smtp_tls"])
    username, env, file = (
        values["smtp_username"], values["smtp_password_env"], values["smtp_password_file"]
    )  # fmt: skip
    if username and (len(username) > 256 or not username.isprintable() or not username.strip()):
        raise _fail("smtp_username", "must be printable text of at most 256 characters", username)
    if env and not ENV_NAME.match(env):
        raise _fail("smtp_password_env", "must be an environment variable name", env)
    if env and file:
        raise ConfigError(
            "voicemail.smtp_password_file",
            "give smtp_password_env or smtp_password_file, not both",
        )
    if bool(username) != bool(env or file):
        key = "smtp_password_env" if username else "smtp_username"
        raise ConfigError(
            f"voicemail.{key}",
            "smtp_username needs smtp_password_env or smtp_password_file, and they need it",
        )
    if username and values["smtp_tls"] != "starttls":
        raise ConfigError(
            "voicemail.smtp_tls", 'must be "starttls" with smtp_username: no password in clear'
        )
    return values


def relay_of(config: Any) -> SmtpRelay:
    """The relay a L{warden.features.voicemail.VoicemailConfig} names."""
    return SmtpRelay(
        config.smtp_host, config.smtp_port, config.smtp_from, config.smtp_tls, config.smtp_ca,
        config.smtp_username,
    )  # fmt: skip


def mail_queue(reactor: Any, config: Any, fips: bool = False) -> MailQueue:
    """
    The queue sending through the relay of ``config`` (a
    L{warden.features.voicemail.VoicemailConfig}); the password is read now.
    With ``fips`` STARTTLS uses FIPS-approved TLS only.

    Raises:
        ConfigError: the password's variable is unset or its file unreadable,
            or ``smtp_ca`` is no certificate bundle.
    """
    relay = relay_of(config)
    password = read_password(
        config.smtp_password_env, config.smtp_password_file,
        "voicemail.smtp_password_env", "voicemail.smtp_password_file",
    )  # fmt: skip
    tls = client_tls(relay, "voicemail.smtp_ca", fips)

    def send(recipient: str, data: bytes) -> Deferred[None]:
        return send_mail(reactor, relay, recipient, data, password, tls)

    return MailQueue(reactor, send, "voicemail")


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:MAX_NAME]


def _minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def voicemail_email(sender: str, recipient: str, message: VoicemailMessage, pcm: bytes) -> bytes:
    """
    The email telling ``recipient`` of ``message``: who left it, when and how
    long it is, with its audio (``pcm``) attached as a WAV file.
    """
    name = _printable(message.caller_name)
    number = _printable(message.caller) or "unknown"
    caller = f"{name} <{number}>" if name else number
    received = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(message.received_at))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(message.received_at))
    mail = email.message.EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = (
        f"Voicemail for {message.mailbox} from {caller} ({_minutes(message.duration)})"
    )
    mail["Date"] = email.utils.formatdate(message.received_at, usegmt=True)
    mail["Message-ID"] = email.utils.make_msgid(domain=sender.partition("@")[2] or None)
    mail.set_content(
        f"A new voicemail message was left in mailbox {message.mailbox}.\n\n"
        f"From:     {caller}\n"
        f"Received: {received}\n"
        f"Duration: {_minutes(message.duration)} ({message.duration:.1f} seconds)\n\n"
        "The recording is attached (WAV, 8 kHz mono).\n"
    )
    mail.add_attachment(
        g711.wav_bytes(pcm), maintype="audio", subtype="wav",
        filename=f"voicemail-{message.mailbox}-{stamp}.wav",
    )  # fmt: skip
    return mail.as_bytes()
