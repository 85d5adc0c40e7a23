"""Compile Token.vy into Token.json (ABI + deployment bytecode + compiler version).

Run from the project root after editing Token.vy:

    python -m devnet.contracts.build

Needs the ``contracts`` extra (vyper==0.4.3). The generated Token.json is committed, so the
runtime (devnet.token) never needs the compiler.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "Token.vy"
OUTPUT = HERE / "Token.json"


def build(source: Path = SOURCE, output: Path = OUTPUT) -> dict[str, object]:
    try:
        import vyper
        from vyper.compiler import compile_code
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "vyper is not installed: pip install 'vyper==0.4.3' (the project's `contracts` extra)"
        ) from exc

    out = compile_code(
        source.read_text(),
        contract_path=source.name,
        output_formats=["abi", "bytecode"],
    )
    artifact: dict[str, object] = {
        "contractName": source.stem,
        "source": source.name,
        "compiler": f"vyper {vyper.__version__}",
        "vyper_version": vyper.__version__,
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }
    output.write_text(json.dumps(artifact, indent=2) + "\n")
    return artifact


def main() -> int:
    artifact = build()
    print(
        f"wrote {OUTPUT} ({artifact['compiler']}, "
        f"{(len(str(artifact['bytecode'])) - 2) // 2} bytes of bytecode)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
