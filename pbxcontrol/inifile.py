"""The INI file itself: read strictly, typed access with every problem recorded, and the
names nobody reads (the config's syntax, apart from what each key means)."""

from __future__ import annotations

import configparser
from pathlib import Path

# Marks a repeated section or key while check() keeps reading past it (a NUL never occurs in a
# name read from a text file).
REPEAT = "\0"


class ConfigError(Exception):
    """A config problem, already phrased for one line of output: file, section, key."""

    def __init__(self, path: str, section: str | None, key: str | None, message: str):
        self.path, self.section, self.key, self.message = path, section, key, message
        where = path
        if section:
            where += f": [{section}]"
        if key:
            where += f" {key}"
        super().__init__(f"{where}: {message}")


class IniReader:
    """Typed access to one parsed file. A bad value is recorded as a ConfigError naming
    file/section/key and replaced by its default, so one pass finds every problem."""

    def __init__(self, path: str, parser: configparser.ConfigParser):
        self.path = path
        self.parser = parser
        self.problems: list[ConfigError] = []
        self.read: set[tuple[str, str]] = set()  # (section, key) pairs the code asked for

    def problem(self, section: str | None, key: str | None, message: str) -> None:
        self.problems.append(ConfigError(self.path, section, key, message))

    def required(self, section: str, key: str) -> str | None:
        self.read.add((section, key))
        if self.parser.has_option(section, key):
            return self.parser.get(section, key).strip()
        self.problem(section, key, "is required")
        return None

    def get(self, section: str, key: str, default: str) -> str:
        self.read.add((section, key))
        if self.parser.has_option(section, key):
            return self.parser.get(section, key).strip()
        return default

    def integer(
        self, section: str, key: str, default: int, *, lo: int = 0, hi: int | None = None
    ) -> int:
        raw = self.get(section, key, str(default))
        try:
            value = int(raw)
        except ValueError:
            self.problem(section, key, f"{raw!r} is not an integer")
            return default
        if value < lo or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.problem(section, key, f"{value} must be {bounds}")
            return default
        return value

    def number(self, section: str, key: str, default: float) -> float:
        raw = self.get(section, key, str(default))
        try:
            value = float(raw)
        except ValueError:
            self.problem(section, key, f"{raw!r} is not a number")
            return default
        if not value > 0:
            self.problem(section, key, f"{raw!r} must be greater than 0")
            return default
        return value

    def boolean(self, section: str, key: str, default: bool) -> bool:
        raw = self.get(section, key, "yes" if default else "no").lower()
        if raw in ("1", "yes", "true", "on"):
            return True
        if raw in ("0", "no", "false", "off"):
            return False
        self.problem(section, key, f"{raw!r} is not a boolean (yes/no)")
        return default

    def choice(self, section: str, key: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.get(section, key, default)
        if raw not in choices:
            self.problem(section, key, f"{raw!r} is not one of {', '.join(choices)}")
            return default
        return raw


def _new_parser() -> configparser.ConfigParser:
    # No inline comments: `password = pa ss #1` must read back as written. A comment goes on
    # its own line, starting with ; or #.
    return configparser.ConfigParser(
        comment_prefixes=(";", "#"), inline_comment_prefixes=None, interpolation=None, strict=True
    )


def parse_file(path: str, keep_going: bool = False) -> tuple[IniReader | None, list[ConfigError]]:
    """The parsed file and the problems of its syntax. With keep_going, a repeated section or
    key is reported, set aside under a name nobody reads, and parsing starts again."""
    p = Path(path)
    if not p.is_file():
        return None, [ConfigError(path, None, None, "cannot read config file: no such file")]
    try:
        lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigError(path, None, None, f"cannot read config file: {exc}")]
    problems: list[ConfigError] = []
    for _ in range(len(lines) + 1):
        parser = _new_parser()
        try:
            parser.read_file(lines, source=path)
            return IniReader(path, parser), problems
        except configparser.DuplicateSectionError as exc:
            problems.append(ConfigError(path, exc.section, None, "section " + _twice(exc.lineno)))
            repeated = exc.lineno
        except configparser.DuplicateOptionError as exc:
            problems.append(ConfigError(path, exc.section, exc.option, _twice(exc.lineno)))
            repeated = exc.lineno
        except configparser.MissingSectionHeaderError as exc:
            msg = f"not a valid INI file: line {exc.lineno} comes before any [section]"
            return None, [*problems, ConfigError(path, None, None, msg)]
        except configparser.ParsingError as exc:
            for lineno, _line in exc.errors:  # the line itself may hold a secret: not shown
                msg = f"not a valid INI file: line {lineno} is neither [section] nor key = value"
                problems.append(ConfigError(path, None, None, msg))
            # The parser has read every other line: check() goes on with them.
            return (IniReader(path, parser) if keep_going else None), problems
        except configparser.Error as exc:
            msg = f"not a valid INI file: {str(exc).splitlines()[0]}"
            return None, [*problems, ConfigError(path, None, None, msg)]
        if not keep_going or not repeated:
            return None, problems
        lines[repeated - 1] = _set_aside(lines[repeated - 1])
    return None, problems


def _set_aside(line: str) -> str:
    """`[name]` becomes `[<NUL>name]`, `key = v` becomes `<NUL>key = v`: read by nobody."""
    indent = len(line) - len(line.lstrip())
    if line.lstrip().startswith("["):
        indent += 1
    return line[:indent] + REPEAT + line[indent:]


def _twice(lineno: int | None) -> str:
    return f"is given twice (again on line {lineno})" if lineno else "is given twice"


def unread_names(r: IniReader, known_plugins: frozenset[str] | None) -> list[ConfigError]:
    """Sections and keys nobody reads: most likely typos."""
    read_sections = {s for s, _ in r.read}
    defaults = set(r.parser.defaults())
    found: list[ConfigError] = []
    for section in r.parser.sections():
        if section.startswith(REPEAT):
            continue
        if section.startswith("plugin:"):
            name = section.split(":", 1)[1]
            if known_plugins is not None and name not in known_plugins:
                found.append(ConfigError(r.path, section, None, f"unknown plugin {name!r}"))
            continue
        if section not in read_sections:
            if not section.startswith("asterisk"):  # a bad [asterisk:x] is reported already
                found.append(ConfigError(r.path, section, None, "unknown section (a typo?)"))
            continue
        for key in r.parser.options(section):
            if key not in defaults and not key.startswith(REPEAT) and (section, key) not in r.read:
                found.append(ConfigError(r.path, section, key, "unknown key (a typo?)"))
    return found
