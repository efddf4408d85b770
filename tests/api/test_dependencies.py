"""pyproject's floors, the lock and what a node installs agree with the committed stubs.

Someone who installs the wheel without the lock gets what pyproject admits, so its
floors must be what the generated code refuses to import below. Nodes install
deploy/node-requirements.txt, which must be the lock's export, and a release's digest
must cover both files.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
GRPC_PACKAGES = ("grpcio", "grpcio-health-checking", "grpcio-reflection")


def declared() -> dict[str, SpecifierSet]:
    with (REPO / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return {req.name: req.specifier for req in map(Requirement, project["dependencies"])}


def floor(specifier: SpecifierSet) -> Version | None:
    floors = [Version(s.version) for s in specifier if s.operator in (">=", "==", "~=")]
    return max(floors, default=None)


def grpc_generated_versions() -> set[Version]:
    """GRPC_GENERATED_VERSION of each *_pb2_grpc.py: grpcio below it refuses to import."""
    pattern = re.compile(r"^GRPC_GENERATED_VERSION = '([^']+)'$", re.M)
    return {Version(pattern.search(stub.read_text())[1]) for stub in PROTO.glob("*_pb2_grpc.py")}


def protobuf_gencode_versions() -> set[Version]:
    """The gencode version each *_pb2.py validates: a protobuf runtime below it refuses."""
    pattern = re.compile(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,"
        r"\s*(\d+),\s*(\d+),\s*(\d+),"
    )
    return {
        Version(".".join(pattern.search(stub.read_text()).groups()))
        for stub in PROTO.glob("*_pb2.py")
    }


def test_the_stubs_state_their_versions() -> None:
    assert len(grpc_generated_versions()) == 1
    assert len(protobuf_gencode_versions()) == 1


def test_grpc_floors_are_what_the_stubs_require() -> None:
    needed = max(grpc_generated_versions())
    specs = declared()
    for name in GRPC_PACKAGES:
        assert floor(specs[name]) == needed, (
            f"pyproject asks for {name}{specs[name]}, the committed stubs need {name}>={needed}"
        )


def test_protobuf_bounds_are_what_the_gencode_accepts() -> None:
    """The runtime refuses to be older than the gencode; newer majors are outside
    protobuf's cross-version guarantee, so the range ends before the next one."""
    gencode = max(protobuf_gencode_versions())
    spec = declared()["protobuf"]
    assert floor(spec) == gencode, f"pyproject asks for protobuf{spec}, the stubs need {gencode}"
    assert Version(f"{gencode.major}.999") in spec
    assert Version(f"{gencode.major + 1}.0") not in spec


def test_node_requirements_are_the_locks_export() -> None:
    exported = subprocess.run(
        ["bash", "-c", "source deploy/venv.sh && node_requirements"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    committed = (REPO / "deploy" / "node-requirements.txt").read_text()
    assert exported == committed, "run deploy/lock.sh (or node_requirements) and commit"


def test_every_node_requirement_is_pinned_with_hashes() -> None:
    text = (REPO / "deploy" / "node-requirements.txt").read_text()
    entries = re.split(r"\n(?=\S)", re.sub(r"^#.*\n", "", text, flags=re.M).strip())
    names = set()
    for entry in entries:
        requirement = Requirement(entry.split(" \\")[0].strip())
        assert str(requirement.specifier).startswith("=="), entry
        assert "--hash=sha256:" in entry, entry
        names.add(requirement.name)
    assert set(declared()) | {"setuptools"} <= names
    assert "prompt-toolkit" not in names and "grpcio-tools" not in names


def test_a_releases_digest_covers_the_lock(tmp_path: Path) -> None:
    """install.sh names a release by a digest of the tar that release.exclude shapes."""
    archive = tmp_path / "release.tar"
    subprocess.run(
        ["tar", "-c", "-f", str(archive), "-C", str(REPO), "-X", "deploy/release.exclude", "."],
        cwd=REPO,
        check=True,
        timeout=60,
    )
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"./uv.lock", "./deploy/node-requirements.txt", "./pyproject.toml"} <= names
