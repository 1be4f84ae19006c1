r"""Key normalisation: the form in which a key of ``changes`` is compared with the policy's words.

A key is reduced to lower-case *words*:

1. Unicode compatibility forms are folded (NFKC): fullwidth ``\uff50\uff41\uff53\uff53...``
   is ``pass...``, ligatures and other presentation forms become plain letters;
2. confusable letters become the Latin letter they imitate (Cyrillic ``\u0430`` and Greek
   ``\u03b1`` are ``a``, see ``CONFUSABLES``), so ``p\u0430ssword`` with a Cyrillic ``\u0430``
   is ``password``;
3. accents and other combining marks, and invisible format characters (zero-width space, soft
   hyphen), are removed: ``contraseña`` is ``contrasena``;
4. the key is split at ``_``, ``-``, ``.``, spaces and any other character that is neither a
   letter nor a digit, at camelCase humps (``apiKey``, ``HTTPAuthorization``) and between
   letters and digits; each word is case-folded (``Paßwort`` is ``passwort``).

The policy's own words go through the same steps, so a policy may list ``contraseña`` or
``\u043f\u0430\u0440\u043e\u043b\u044c`` (Russian) as written.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["CONFUSABLES", "DEFAULT_FRAGMENTS", "DEFAULT_KEYS", "normalise_key", "words"]

# Letters from other scripts that render like a Latin letter in common fonts (a subset of
# Unicode's confusables.txt: the Cyrillic, Greek and Armenian look-alikes of Latin letters, and
# Latin variants NFKC leaves alone). Fullwidth and mathematical letters are NFKC's job.
_LOOKALIKES = {
    "a": "\u0430\u03b1\u0251", "b": "\u042c\u0185", "c": "\u0441\u03f2", "d": "\u0501",
    "e": "\u0435\u0454\u03b5", "g": "\u0261", "h": "\u04bb", "i": "\u0456\u03b9\u0131",
    "j": "\u0458\u03f3", "k": "\u03ba\u043a", "l": "\u04cf", "n": "\u0578",
    "o": "\u043e\u03bf\u0585\u03c3", "p": "\u0440\u03c1", "q": "\u051b", "s": "\u0455",
    "t": "\u03c4", "u": "\u03c5\u057d\u03bc", "v": "\u03bd\u0475", "w": "\u051d\u03c9",
    "x": "\u0445\u03c7", "y": "\u0443\u03b3\u04af", "A": "\u0410\u0391", "B": "\u0412\u0392",
    "C": "\u0421\u03f9", "E": "\u0415\u0395", "H": "\u041d\u0397", "I": "\u0406\u0399\u04c0",
    "J": "\u0408", "K": "\u041a\u039a", "M": "\u041c\u039c", "N": "\u039d",
    "O": "\u041e\u039f\u0555", "P": "\u0420\u03a1", "S": "\u0405", "T": "\u0422\u03a4",
    "X": "\u0425\u03a7", "Y": "\u0423\u03a5\u04ae", "Z": "\u0396",
}  # fmt: skip
CONFUSABLES: dict[int, str] = {
    ord(lookalike): latin for latin, lookalikes in _LOOKALIKES.items() for lookalike in lookalikes
}
"""``str.translate`` table: each confusable letter to the Latin letter it imitates."""

DEFAULT_KEYS: frozenset[str] = frozenset(
    {
        # passwords, in English and in other languages' words for it
        "password", "passwords", "passwd", "pwd", "pw", "pass", "passphrase", "passcode",
        "passwort", "kennwort", "contraseña", "clave", "motdepasse", "senha", "wachtwoord",
        "parola", "lösenord", "salasana", "hasło", "haslo", "heslo", "jelszó",
        "\u043f\u0430\u0440\u043e\u043b\u044c",  # Russian; escaped: it is all look-alikes
        "密码", "密碼", "パスワード", "비밀번호",
        # secrets and keys
        "secret", "secrets", "apikey", "apikeys", "apisecret", "clientsecret", "privatekey",
        "secretkey", "signingkey", "encryptionkey", "masterkey", "accesskey", "sshkey",
        "credential", "credentials", "securityanswer", "secretanswer", "securityquestionanswer",
        # tokens, sessions and authentication
        "token", "tokens", "jwt", "bearer", "auth", "authcode", "authorization",
        "proxyauthorization", "cookie", "cookies", "setcookie", "session", "sessions", "sid",
        "sessid", "sessionid", "sessionkey", "jsessionid", "phpsessid", "csrf", "xsrf", "otp",
        "totp", "mfacode", "recoverycode", "recoverycodes",
        # connection strings, which hold a password
        "dsn", "connectionstring", "connstr", "databaseurl", "databaseuri", "dburl",
        # identity numbers and payment cards
        "ssn", "socialsecurity", "socialsecuritynumber", "creditcard", "creditcards",
        "cardnumber", "ccnumber", "pan", "cvv", "cvv2", "cvc", "pin", "iban", "accountnumber",
        "routingnumber",
    }
)  # fmt: skip
"""Words (and runs of up to three words, joined) whose values are always redacted."""

DEFAULT_FRAGMENTS: frozenset[str] = frozenset(
    {
        "password", "passwd", "passphrase", "passwort", "secretkey", "clientsecret", "apikey",
        "accesstoken", "refreshtoken", "authtoken", "idtoken", "sessiontoken", "bearertoken",
        "privatekey", "authorization", "creditcard", "cardnumber", "socialsecurity",
        "connectionstring", "sessionid",
    }
)  # fmt: skip
"""Substrings of a separator-free key that mark it sensitive (long, unambiguous words only)."""

_SEPARATORS = re.compile(r"[^0-9A-Za-z]+")
# camelCase humps ("apiKey"), acronym ends ("HTTPAuthorization"), letter/digit boundaries.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_DROPPED = frozenset({"Mn", "Me", "Cf"})  # combining marks, invisible format characters


def _fold(key: str) -> str:
    text = unicodedata.normalize("NFKC", key).translate(CONFUSABLES)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED)


def _char_kind(ch: str) -> int:
    if ch.isdigit():
        return 0
    if ch.isupper():
        return 1
    return 2 if ch.isalpha() else 3  # 3: a separator


def _unicode_words(text: str) -> list[str]:
    # The non-ASCII twin of _SEPARATORS + _WORD: split at separators, digit/letter boundaries,
    # lower-to-upper humps and the last capital of an acronym followed by lower case.
    found: list[str] = []
    current = ""
    previous = 3
    for index, ch in enumerate(text):
        kind = _char_kind(ch)
        if kind == 3:
            if current:
                found.append(current)
            current, previous = "", 3
            continue
        boundary = current and (
            (kind == 0) != (previous == 0)
            or (kind == 1 and previous == 2)
            or (
                kind == 1
                and previous == 1
                and index + 1 < len(text)
                and _char_kind(text[index + 1]) == 2
            )
        )
        if boundary:
            found.append(current)
            current = ""
        current += ch
        previous = kind
    if current:
        found.append(current)
    return found


def words(key: str) -> tuple[str, ...]:
    """``key`` as its normalised words: ``"X-Auth_Token"`` -> ``("x", "auth", "token")``."""
    # Not cached here: RedactionPolicy caches what it concluded per key (an int), and a cache
    # of tuples churned by hostile keys would set off full garbage collections.
    text = key if key.isascii() else _fold(key)
    if text.isascii():
        found = tuple(
            word.lower() for part in _SEPARATORS.split(text) for word in _WORD.findall(part)
        )
    else:
        found = tuple(word.casefold() for word in _unicode_words(text))
    return found


def normalise_key(key: str) -> str:
    """``key`` normalised with every separator removed: ``"X-Auth_Token"`` -> ``"xauthtoken"``."""
    return "".join(words(key))
