"""Static checks of deploy/docker: what each image would contain and how it would run."""

from __future__ import annotations

import pytest

from tests.deploy import dockerfile as dfm
from tests.deploy.imports import closure, distributions_of, requirement_closure
from tests.deploy.manifests import REPO, containers, rendered

#: image target -> (service package, gRPC port or None for HTTP, metrics/HTTP port)
TARGETS = {
    "emotion": ("emotion", 50051, 9101),
    "emotion-gpu": ("emotion", 50051, 9101),
    "reasoning": ("reasoning", 50052, 9102),
    "router": ("router", 50053, 9103),
    "router-local": ("router", 50053, 9103),
    "benchmark": ("benchmark", 50054, 9104),
    "gateway": ("gateway", None, 8080),
}
#: Never in a serving image: training stacks and the other services' heavy runtimes.
HEAVY = {"torch", "transformers", "onnx", "scikit-learn", "sentence-transformers", "tensorflow"}
ONLY_IN = {
    "onnxruntime": {"emotion"},
    "onnxruntime-gpu": {"emotion-gpu"},
    "tokenizers": {"emotion", "emotion-gpu"},
    "llama-cpp-python": {"router-local"},
    "fastapi": {"gateway"},
    "uvicorn": {"gateway"},
}
EMOTION_MODEL = ("emotion.int8.onnx", "tokenizer.json", "model.json")


@pytest.fixture(scope="module")
def df() -> dfm.Dockerfile:
    return dfm.parse()


def landed(service: str) -> bool:
    return (REPO / "services" / service / "__main__.py").is_file()


def requirement_file(target: str):
    return dfm.REQUIREMENTS / f"{target}.txt"


def test_every_service_has_a_target(df: dfm.Dockerfile) -> None:
    missing = set(TARGETS) - set(df.stages)
    assert not missing, f"Dockerfile lacks targets {sorted(missing)}"
    for target in TARGETS:
        assert requirement_file(target).is_file(), f"no requirement file for {target}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_runs_as_numeric_non_root_user(df: dfm.Dockerfile, target: str) -> None:
    user = df.user(target)
    assert user is not None, f"{target}: no USER (would run as root)"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"{target}: USER {user!r} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0), f"{target}: group {gid!r} must be numeric, non-root"
    # Kubernetes' runAsNonRoot can verify only numeric users; the pod spec uses the same uid.
    dep = rendered("base").get("Deployment", f"masterx-{TARGETS[target][0]}")
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_starts_from_python_311_slim(df: dfm.Dockerfile, target: str) -> None:
    image = df.root_image(target)
    assert image.startswith("python:3.11-slim"), f"{target} starts from {image}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_entrypoint_runs_the_service_module(df: dfm.Dockerfile, target: str) -> None:
    service = TARGETS[target][0]
    entry = df.effective(target, "ENTRYPOINT")[-1].json_or_words()
    assert entry == ["python", "-m", f"services.{service}"]
    if not landed(service):
        pytest.skip(f"services/{service}/__main__.py has not landed yet")
    assert dfm.in_context(f"services/{service}/__main__.py")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_ports_match_the_deployment(df: dfm.Dockerfile, target: str) -> None:
    service, grpc_port, second_port = TARGETS[target]
    exposed = {int(p.split("/")[0]) for ins in df.effective(target, "EXPOSE") for p in ins.words()}
    dep = rendered("base").get("Deployment", f"masterx-{service}")
    container_ports = {p["containerPort"] for c in containers(dep) for p in c.get("ports", [])}
    assert exposed == container_ports, f"{target}: EXPOSE {exposed} vs containerPorts {container_ports}"
    env = df.env(target)
    if grpc_port is not None:
        assert env["MASTERX_GRPC_PORT"] == str(grpc_port)
        assert env["MASTERX_METRICS_PORT"] == str(second_port)
        assert env["MASTERX_GRPC_HOST"] == "0.0.0.0", "a container must bind all interfaces"
    else:
        assert env["GATEWAY_PORT"] == str(second_port)


def test_copy_sources_exist_and_are_in_the_build_context(df: dfm.Dockerfile) -> None:
    ignore = dfm.DockerIgnore()
    problems = []
    for stage in df.stages.values():
        for ins in stage.ops("COPY"):
            from_stage, sources, dest = dfm.copy_sources(ins)
            if from_stage is not None:
                if from_stage not in df.stages:
                    problems.append(f"line {ins.line}: COPY --from={from_stage}: no such stage")
                continue
            if stage.name != "deps-base":  # code lands at the same path under /app (PYTHONPATH)
                assert all(dest == f"/app/{src}" for src in sources), f"line {ins.line}: COPY {sources} -> {dest}"
            for src in sources:
                service = src.split("/")[1] if src.startswith("services/") and src.count("/") >= 2 else None
                if service and not landed(service):
                    continue  # the gateway's package lands separately
                if not (REPO / src).exists():
                    problems.append(f"line {ins.line}: COPY {src}: not in the repository")
                elif ignore.excluded(src.rstrip("/")):
                    problems.append(f"line {ins.line}: COPY {src}: excluded by {dfm.DOCKERIGNORE.name}")
    assert not problems, "\n".join(problems)


def test_dockerignore_keeps_local_state_and_training_out(df: dfm.Dockerfile) -> None:
    ignore = dfm.DockerIgnore()
    for path in (
        ".venv/bin/python",
        "tests/conftest.py",
        ".git/HEAD",
        "services/emotion/training/train.py",
        "services/emotion/model/build/train.log",
        "masterx_runtime/testing/servers.py",
        "services/router/__pycache__/app.cpython-311.pyc",
        "bench/bench_router.py",
    ):
        assert ignore.excluded(path), f"{path} would be sent to the build"
    for path in (
        "masterx_runtime/server.py",
        "services/emotion/model/emotion.int8.onnx",
        "deploy/docker/requirements/emotion.txt",
        "masterx/emotion/v1/emotion_pb2.py",
    ):
        assert not ignore.excluded(path), f"{path} is needed by the build"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_stage_installs_its_own_requirement_file(df: dfm.Dockerfile, target: str) -> None:
    copies = [dfm.copy_sources(i) for i in df.stages[target].ops("COPY")]
    deps = [src for frm, srcs, _ in copies if frm is not None for src in srcs]
    froms = [frm for frm, _, _ in copies if frm is not None]
    assert froms == [f"deps-{target}"] and deps == ["/install"], f"{target} copies {froms}"
    runs = " ".join(i.args for i in df.stages[f"deps-{target}"].ops("RUN"))
    assert f"requirements/{target}.txt" in runs


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_requirements_carry_no_foreign_weight(target: str) -> None:
    dists = requirement_closure(dfm.requirement_lines(requirement_file(target)))
    heavy = dists & HEAVY
    assert not heavy, f"{target} image would install {sorted(heavy)}"
    for dist, allowed in ONLY_IN.items():
        if dist in dists:
            assert target in allowed, f"{target} image would install {dist} (only for {sorted(allowed)})"


def test_emotion_images_use_the_right_onnxruntime() -> None:
    cpu = requirement_closure(dfm.requirement_lines(requirement_file("emotion")))
    gpu = requirement_closure(dfm.requirement_lines(requirement_file("emotion-gpu")))
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    # Both wheels write the `onnxruntime` module: the GPU image must not list the CPU wheel itself.
    gpu_listed = {dfm.canonical_name(line) for line in dfm.requirement_lines(requirement_file("emotion-gpu"))}
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu_listed


@pytest.mark.parametrize("target", ["emotion", "emotion-gpu"])
def test_emotion_build_fails_without_the_model(df: dfm.Dockerfile, target: str) -> None:
    runs = " ".join(i.args for i in df.stages[target].ops("RUN"))
    for name in EMOTION_MODEL:
        assert f"test -f services/emotion/model/{name}" in runs, f"{target} does not check {name}"
    assert not dfm.DockerIgnore().excluded(f"services/emotion/model/{EMOTION_MODEL[0]}")


def test_gpu_image_registers_the_cuda_wheels_with_the_loader(df: dfm.Dockerfile) -> None:
    runs = " ".join(i.args for i in df.stages["emotion-gpu"].ops("RUN"))
    assert "site-packages/nvidia" in runs and "ldconfig" in runs
    reqs = " ".join(dfm.requirement_lines(requirement_file("emotion-gpu")))
    assert "onnxruntime-gpu[cuda,cudnn]" in reqs


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_holds_every_module_the_service_imports(df: dfm.Dockerfile, target: str) -> None:
    """Follow imports from services/<svc>/__main__.py: each first-party file must be copied into
    the image, each third-party module must come from the image's requirements."""
    service = TARGETS[target][0]
    if not landed(service):
        pytest.skip(f"services/{service}/__main__.py has not landed yet")
    reach = closure(f"services.{service}.__main__")
    copied = [
        src.rstrip("/")
        for st in df.chain(target)
        for ins in st.ops("COPY")
        for frm, srcs, _ in [dfm.copy_sources(ins)]
        if frm is None
        for src in srcs
    ]
    ignore = dfm.DockerIgnore()
    problems = []
    for path in sorted(reach.files):
        rel = str(path.relative_to(REPO))
        if not any(rel == c or rel.startswith(c + "/") for c in copied):
            problems.append(f"{rel} is imported but not copied into the {target} image")
        elif ignore.excluded(rel):
            problems.append(f"{rel} is imported but excluded by {dfm.DOCKERIGNORE.name}")
    installed = requirement_closure(dfm.requirement_lines(requirement_file(target)))
    for module, importers in sorted(reach.third_party.items()):
        dists = distributions_of(module)
        if module == "onnxruntime" and target == "emotion-gpu":
            dists = dists | {"onnxruntime-gpu"}
        if not dists & installed:
            problems.append(
                f"`import {module}` (in {sorted(importers)[0]}) needs {sorted(dists) or 'an unknown distribution'}"
                f", missing from deploy/docker/requirements/{target}.txt"
            )
    assert not problems, "\n".join(problems)
