"""The Docker build context as Docker sees it: .dockerignore rules and Dockerfile instructions.

Follows Docker's rules (github.com/moby/patternmatcher): patterns are cleaned paths relative to the context,
`*` and `?` do not cross `/`, `**` matches any number of directories, a leading `!` re-includes, the last
matching pattern wins, and a pattern also matches every path below a directory it matches.
"""

import os
import re
import shlex
import shutil


def read_ignore(context):
    """The .dockerignore patterns of `context` as (negated, regex) pairs, in file order."""
    path = os.path.join(context, ".dockerignore")
    patterns = []
    if not os.path.exists(path):
        return patterns
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:].strip()
            line = os.path.normpath(line).lstrip("/")
            patterns.append((negated, re.compile(_pattern_regex(line)), line))
    return patterns


def _pattern_regex(pattern):
    out = "^"
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                # `**/` matches zero or more directories; a trailing `**` matches everything.
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += pattern[i : j + 1]
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return out + "$"


def excluded(rel, patterns):
    """Whether the context path `rel` (a/b/c) is left out of the build context."""
    parents = []
    parts = rel.split("/")
    for n in range(1, len(parts) + 1):
        parents.append("/".join(parts[:n]))
    result = False
    for negated, regex, _ in patterns:
        if any(regex.match(p) for p in parents):
            result = not negated
    return result


def _may_reinclude(rel_dir, patterns):
    """Whether a negated pattern could bring back something below the excluded directory `rel_dir`."""
    for negated, _, text in patterns:
        if negated and (text.startswith(rel_dir + "/") or "*" in text.split("/")[0] or text.startswith("**")):
            return True
    return False


def copy_context(context, dest):
    """Copies what Docker would send as the build context of `context` into `dest` (mtimes kept)."""
    patterns = read_ignore(context)
    files = []
    for root, dirs, names in os.walk(context):
        rel_root = os.path.relpath(root, context)
        rel_root = "" if rel_root == "." else rel_root
        keep = []
        for d in dirs:
            rel = f"{rel_root}/{d}" if rel_root else d
            if excluded(rel, patterns) and not _may_reinclude(rel, patterns):
                continue
            keep.append(d)
        dirs[:] = keep
        for name in names:
            rel = f"{rel_root}/{name}" if rel_root else name
            if excluded(rel, patterns):
                continue
            files.append(rel)
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(context, rel), target, follow_symlinks=False)
    return files


class Instruction:
    def __init__(self, keyword, args, line, stage):
        self.keyword = keyword
        self.args = args
        self.line = line
        self.stage = stage

    def flags_and_rest(self):
        """`--flag=value` options and the rest of the arguments (shell words or a JSON array)."""
        words = shlex.split(self.args, posix=True) if not self.args.lstrip().startswith("[") else None
        if words is None:
            return {}, self.args
        flags = {}
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags.setdefault(key, []).append(value)
        return flags, words


class Dockerfile:
    """The instructions of a Dockerfile, with its stages (name -> base) and ARG defaults before the first FROM."""

    def __init__(self, path):
        self.path = path
        self.instructions = []
        self.stages = []  # (name or index, base image or stage)
        self.args = {}
        stage = None
        for line_no, text in _logical_lines(path):
            keyword, _, rest = text.partition(" ")
            keyword = keyword.upper()
            if keyword == "ARG" and stage is None:
                name, _, default = rest.strip().partition("=")
                self.args[name] = default
            if keyword == "FROM":
                words = rest.split()
                base = self.expand(words[0])
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(self.stages))
                self.stages.append((name, base))
                stage = name
            self.instructions.append(Instruction(keyword, rest.strip(), line_no, stage))

    def expand(self, text):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m.group(1) or m.group(2), m.group(0)), text)

    def stage_base(self, name):
        return dict(self.stages)[name]

    def final_stage(self):
        return self.stages[-1][0]

    def image_of(self, stage):
        """The external image a stage finally rests on (following stage names)."""
        names = dict(self.stages)
        base = names[stage]
        while base in names:
            base = names[base]
        return base

    def chain(self, stage):
        """The stage and the stages it is built on, nearest first."""
        names = dict(self.stages)
        out = [stage]
        while names.get(out[-1]) in names:
            out.append(names[out[-1]])
        return out

    def of(self, keyword, stage=None):
        return [i for i in self.instructions if i.keyword == keyword and (stage is None or i.stage == stage)]


def _logical_lines(path):
    """(line number, instruction text) with continuations joined and comments dropped."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    current, start = "", 0
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not current:
            start = n
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            yield start, " ".join(current.split())
        current = ""
    if current.strip():
        yield start, " ".join(current.split())
