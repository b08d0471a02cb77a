"""Which recorded image a system is: every profile scored against the evidence.

Each profile item is `matched`, `differs` or `unknown` (nothing to read). Trees,
OS, CANN, SoC, Python and the vllm/vllm-ascend versions are hard evidence: one
that differs rules the profile out. Other package pins are soft: an upgraded
torch is the same image, drifted. "Unknown base" is an ordinary answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dsv4patch import profiles as profiles_mod
from dsv4patch.fingerprint import Fingerprint
from dsv4patch.profiles import Profile

MATCHED, DIFFERS, UNKNOWN = "matched", "differs", "unknown"
UNKNOWN_BASE = "unknown base"
HARD_PACKAGES = ("vllm", "vllm-ascend")
# A tree still counts as the recorded one with this share of its files as
# recorded: local edits and our own series stay far below the rest.
TREE_MATCH_SHARE = 0.98
_VERSION = re.compile(
    r"^v?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta)[-_.]?(\d*))?"
    r"(?:[-_.]?post[-_.]?(\d+))?(?:[-_.]?dev[-_.]?(\d+))?", re.I)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2}
_CLAUSE = re.compile(r"^(===|==|!=|~=|>=|<=|>|<)\s*(\S+)$")


@dataclass
class Evidence:
    item: str
    expected: str
    found: str | None
    verdict: str
    hard: bool = True


@dataclass
class TreeCount:
    """How many of a tree's recorded files are present as recorded."""
    matched: int
    recorded: int
    differing: int
    missing: int
    added: int


@dataclass
class Candidate:
    profile: str
    score: int
    evidence: list[Evidence] = field(default_factory=list)

    def count(self, verdict: str, hard: bool | None = None) -> int:
        return sum(e.verdict == verdict and hard in (None, e.hard)
                   for e in self.evidence)

    @property
    def ruled_out(self) -> bool:
        return self.count(DIFFERS, hard=True) > 0


@dataclass
class Identification:
    image: str
    confidence: str
    reason: str
    best: Candidate | None = None
    runner_up: Candidate | None = None
    tied: list[str] = field(default_factory=list)
    trees: dict[str, TreeCount] = field(default_factory=dict)


def run(found: Fingerprint, scans: dict[str, dict[str, str] | None]) -> Identification:
    """Score every recorded profile; `scans` maps a tree name to the blob hash of
    each file it has now (None where the tree is absent)."""
    profiles = profiles_mod.load_all()
    if not profiles:
        return Identification(UNKNOWN_BASE, "none", "no image profiles are recorded")
    # Profiles of one release share their manifests: count each manifest once.
    cache: dict[tuple[str, str], TreeCount] = {}
    counts: dict[str, dict[str, TreeCount]] = {}
    for profile in profiles:
        counts[profile.name] = {}
        for name, scan in scans.items():
            if scan is None or name not in profile.trees:
                continue
            key = (name, profile.trees[name]["sha256"])
            if key not in cache:
                cache[key] = _count(profile, name, scan)
            counts[profile.name][name] = cache[key]
    ranked = sorted((_score(p, found, counts[p.name]) for p in profiles),
                    key=lambda c: (c.ruled_out, -c.score, c.profile))
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    result = Identification(best.profile, "", "", best, runner_up,
                            trees=counts[best.profile])
    if best.ruled_out:
        result.image, result.confidence = UNKNOWN_BASE, "none"
        differing = [e.item for e in best.evidence if e.verdict == DIFFERS and e.hard]
        verb = "differs" if len(differing) == 1 else "differ"
        result.reason = f"nearest is {best.profile}, but {', '.join(differing)} {verb}"
        return result

    result.tied = [c.profile for c in ranked
                   if not c.ruled_out and c.score == best.score]
    soft = best.count(DIFFERS, hard=False)
    unknown = best.count(UNKNOWN)
    if len(result.tied) > 1:
        result.confidence = "ambiguous"
        result.reason = (f"{' and '.join(result.tied)} fit equally; "
                         f"{unknown} items could not be read")
    elif soft or unknown:
        result.confidence = "likely"
        result.reason = (f"no hard evidence against it; {soft} package pins "
                         f"differ, {unknown} items could not be read")
    else:
        result.confidence = "exact"
        result.reason = "every item matches"
    return result


def _count(profile: Profile, tree: str, scan: dict[str, str]) -> TreeCount:
    manifest = profiles_mod.tree_manifest(profile, tree)
    matched = sum(scan.get(rel) == digest for rel, digest in manifest.items())
    missing = sum(rel not in scan for rel in manifest)
    return TreeCount(matched, len(manifest), len(manifest) - matched - missing,
                     missing, sum(rel not in manifest for rel in scan))


def _score(profile: Profile, found: Fingerprint,
           counts: dict[str, TreeCount]) -> Candidate:
    env = profile.environment
    evidence = [
        _equal("os", f"{env['os_id']} {env['os_version']}",
               f"{found.os_id} {found.os_version}" if found.os_id else None),
        _equal("CANN", env["cann"], found.cann),
        _equal("SoC", env["soc"], found.soc),
        _equal("python", env["python"], found.python),
    ]
    for name, fields in profile.trees.items():
        evidence.append(_tree(name, fields["manifest"], counts.get(name)))
    for name, spec in profile.packages.items():
        version = found.packages.get(name)
        verdict = UNKNOWN if version is None else (
            MATCHED if satisfies(version, spec) else DIFFERS)
        evidence.append(Evidence(name, spec, version, verdict,
                                 hard=name in HARD_PACKAGES))
    score = sum(2 if e.hard else 1 for e in evidence if e.verdict == MATCHED) \
        - sum(2 if e.hard else 1 for e in evidence if e.verdict == DIFFERS)
    return Candidate(profile.name, score, evidence)


def _equal(item: str, expected: str, found: str | None) -> Evidence:
    if found is None:
        return Evidence(item, expected, None, UNKNOWN)
    same = found.lower() == expected.lower()
    return Evidence(item, expected, found, MATCHED if same else DIFFERS)


def _tree(name: str, expected: str, count: TreeCount | None) -> Evidence:
    if count is None or not count.recorded:
        return Evidence(f"{name} tree", expected, None, UNKNOWN)
    found = f"{count.matched} of {count.recorded} files as recorded"
    share = count.matched / count.recorded
    return Evidence(f"{name} tree", expected, found,
                    MATCHED if share >= TREE_MATCH_SHARE else DIFFERS)


def version_key(version: str) -> tuple[tuple[int, ...], int, int, int] | None:
    """A sortable key for a PEP 440-like version; the local label is ignored."""
    match = _VERSION.match(version.strip().split("+")[0])
    if match is None:
        return None
    release = tuple(int(part) for part in match[1].split("."))
    release += (0,) * (6 - len(release))
    if match[2]:
        pre = (_PRE_RANK[match[2].lower()], int(match[3] or 0))
    elif match[5] is not None and match[4] is None:
        pre = (-1, 0)  # a dev release sorts before every pre-release
    else:
        pre = (3, 0)
    return release, pre[0], pre[1], int(match[4] or 0)


def satisfies(version: str, spec: str) -> bool:
    """Whether `version` meets every comma-separated clause of `spec`."""
    have = version_key(version)
    if have is None:
        return False
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        match = _CLAUSE.match(clause)
        want = version_key(match[2].removesuffix(".*")) if match else None
        if match is None or want is None:
            return False
        op = match[1]
        if op == "~=":
            # ~=X.Y.Z: >= X.Y.Z and the same X.Y.
            depth = max(1, len(match[2].split(".")) - 1)
            ok = have >= want and have[0][:depth] == want[0][:depth]
        elif match[2].endswith(".*"):
            depth = len(match[2].split(".")) - 1
            ok = (have[0][:depth] == want[0][:depth]) == (op in ("==", "==="))
        else:
            ok = {"==": have == want, "===": have == want, "!=": have != want,
                  ">=": have >= want, "<=": have <= want, ">": have > want,
                  "<": have < want}[op]
        if not ok:
            return False
    return True
