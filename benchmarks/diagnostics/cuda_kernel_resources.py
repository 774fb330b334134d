"""Registers, stack and spills of the CUDA backend's kernels, and where the local-memory traffic
sits in the machine code, without a GPU.

Compiles csrc/cuda/sampler.cu for one architecture with the flags a CMake build used
(compile_commands.json), reads ptxas -v (registers, stack frame, spill bytes per kernel), then
disassembles the cubin (cuobjdump -sass) and, per plan kernel, counts the local loads and stores
(LDL/STL: spills and stack arrays alike), and those of the unet functions it calls rather than
inlines, that sit inside an innermost loop doing multiply-adds
(FFMA or HMMA: the convolutions and dense layers, where local-memory traffic would cost). The
CUDA toolkit ships cuobjdump; where it does not, `pip download nvidia-cuda-cuobjdump` has it.

    python benchmarks/diagnostics/cuda_kernel_resources.py build/standalone --arch sm_90 \\
        [--cuobjdump PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

ADDRESS = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def compile_cubin(build: Path, arch: str, cubin: Path) -> str:
    """sampler.cu to a cubin with its CMake flags; returns ptxas -v's report."""
    entry = next(e for e in json.loads((build / "compile_commands.json").read_text())
                 if e["file"].endswith("cuda/sampler.cu"))
    args, skip = [], False
    for a in shlex.split(entry["command"]):
        if skip:
            skip = False
        elif a in ("-o", "-MF", "-MT"):
            skip = True
        elif not (a.startswith(("--generate-code", "-gencode", "-MD")) or a == "-c"):
            args.append(a)
    args += [f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-o", str(cubin)]
    run = subprocess.run(args, cwd=entry["directory"], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr[-4000:])
    return run.stderr


def ptxas_report(text: str) -> dict[str, dict]:
    """Per function: stack frame, spill stores and loads (bytes), registers."""
    out, name = {}, None
    for line in text.splitlines():
        if "Function properties for" in line:
            name = line.split("for ")[-1].strip()
        elif name and "stack frame" in line:
            n = [int(x) for x in re.findall(r"(\d+) bytes", line)]
            out[name] = {"stack_bytes": n[0], "spill_store_bytes": n[1], "spill_load_bytes": n[2]}
        elif "Compiling entry function" in line:
            name = re.search(r"'([^']+)'", line).group(1)
        elif name and "Used" in line and "registers" in line:
            out.setdefault(name, {})["registers"] = int(re.search(r"Used (\d+) registers", line).group(1))
    return out


def local_traffic(sass: str) -> dict[str, dict]:
    """Per plan kernel and unet function it calls: local loads and stores overall, and inside
    innermost multiply-add loops."""
    out = {}
    for body in re.split(r"\n\s+Function : ", sass)[1:]:
        name = body.split("\n")[0].strip()
        if "plan_kernel" not in name and "unet" not in name:  # the plan kernels and the functions they call
            continue
        code = [(int(m.group(1), 16), m.group(2).strip()) for m in map(ADDRESS.search, body.split("\n")) if m]
        loops = [(int(t.group(1), 16), a) for a, t in
                 ((a, re.search(r"BRA.*?0x([0-9a-f]+)", text)) for a, text in code) if t and int(t.group(1), 16) < a]
        inner = [(lo, hi) for lo, hi in loops if not any(lo < l2 and h2 < hi for l2, h2 in loops)]
        local = re.compile(r"\b(LDL|STL)\b")
        hot, hot_local, spilling = 0, 0, []
        for lo, hi in inner:
            ops = [text for a, text in code if lo <= a <= hi]
            fma = sum(bool(re.search(r"\b(FFMA|HMMA)", t)) for t in ops)
            if fma >= 4:
                hot += 1
                n = sum(bool(local.search(t)) for t in ops)
                hot_local += n
                if n:  # what the loop does besides: calls (division's slow path, ...) and tensor-core ops
                    spilling.append({"at": hex(lo), "instructions": len(ops), "multiply_adds": fma, "local": n,
                                     "calls": sum("CALL" in t for t in ops),
                                     "shared_loads": sum(bool(re.search(r"\bLDS\b", t)) for t in ops)})
        out[name] = {"instructions": len(code), "local_accesses": sum(bool(local.search(t)) for _, t in code),
                     "multiply_add_loops": hot, "local_accesses_in_them": hot_local, "loops_with_local": spilling}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="a CMake build directory with CUDA on (compile_commands.json)")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--cuobjdump", default=shutil.which("cuobjdump"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "sampler.cubin"
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout
        result = {"arch": args.arch, "commit": commit.strip(),
                  "ptxas": ptxas_report(compile_cubin(args.build, args.arch, cubin))}
        if args.cuobjdump:
            sass = subprocess.run([args.cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True)
            result["sass"] = local_traffic(sass.stdout)
    for name, r in result["ptxas"].items():
        if "registers" in r:
            print(f"{name[-70:]}: {r['registers']} registers, {r.get('stack_bytes')} B stack, "
                  f"{r.get('spill_store_bytes')} / {r.get('spill_load_bytes')} B spill stores / loads")
    for name, r in result.get("sass", {}).items():
        print(f"{name[-70:]}: {r['local_accesses']} local accesses of {r['instructions']} instructions; "
              f"{r['local_accesses_in_them']} in its {r['multiply_add_loops']} innermost multiply-add loops")
        for loop in r["loops_with_local"]:
            print(f"    loop at {loop['at']}: {loop['instructions']} instructions, {loop['multiply_adds']} "
                  f"multiply-adds, {loop['local']} local accesses, {loop['calls']} calls")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
