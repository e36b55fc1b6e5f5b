"""dlkit serve (torch and onnx backends) against a naive FastAPI endpoint, under the same bounded load on 127.0.0.1.

The naive endpoint does what the course's predict code does, per request: PIL open, torchvision transforms, model
forward on one image (a plain `def` endpoint, so FastAPI runs it on its thread pool, as tutorials write it). Every
server is a subprocess on 127.0.0.1 on the same HTTP stack: uvicorn with dlkit serve's settings
(dlkit.serve.server.uvicorn_config: httptools and uvloop where installed, as `dlkit[serve]` installs them; the
header line says which ran). They run interleaved (each repeat visits every server at every concurrency), and the
load generator is one asyncio process sending pre-built multipart requests over keep-alive connections, a fixed
number of requests with a time cap, so it stops by itself; it costs every server the same (~0.15 ms of CPU per
request, on the same CPUs). Uploads are the real hymenoptera JPEGs.

    python benchmarks/serve.py [--run RUN] [--model quick] [--clients 1,8,32] [--requests 200] [--repeat 3]
    python benchmarks/serve.py --grid [--configs 1:0,8:2,16:2,16:5:1]   # dlkit torch over settings:
                                   # --max-batch:--max-wait-ms[:--threads[:--decode-workers]] each

onnxruntime against PyTorch eager on the bare model (batch 64 and 1) is benchmarks/onnx_predict.py.
"""

import argparse
import asyncio
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, median  # noqa: E402

HYMENOPTERA = Path(os.environ.get("DLKIT_HYMENOPTERA_DIR", SHARED / "hymenoptera"))
BOUNDARY = "dlkitbenchboundary"


# ---- the naive reference server ------------------------------------------------------------------------------------

def naive_app(run: str):
    """The course's predict code behind FastAPI: one image per request, decoded and transformed per request."""
    import torch
    from fastapi import FastAPI, File, UploadFile
    from PIL import Image
    from torchvision import transforms

    import dlkit

    predictor = dlkit.load(run, device="cpu")
    model, spec = predictor.model.eval(), predictor.spec
    transform = transforms.Compose([transforms.Resize(spec.image_size), transforms.CenterCrop(spec.image_size),
                                    transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile = File(...)):
        image = Image.open(file.file).convert("RGB" if spec.channels == 3 else "L")
        with torch.no_grad():
            probs = model(transform(image).unsqueeze(0)).softmax(1)[0]
        values, index = probs.topk(min(5, len(probs)))
        return {"predictions": [{"class": spec.class_names[i], "probability": v}
                                for v, i in zip(values.tolist(), index.tolist())]}

    return app


def run_naive(run: str) -> None:
    """On the uvicorn settings dlkit serve uses (the same HTTP stack both sides: httptools and uvloop if installed)."""
    import uvicorn

    from dlkit.serve import ServeSettings
    from dlkit.serve.server import bind, uvicorn_config

    app = naive_app(run)
    sock = bind("127.0.0.1", 0)
    print(f"serving naive on http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    uvicorn.Server(uvicorn_config(app, ServeSettings())).run(sockets=[sock])


# ---- servers as subprocesses -----------------------------------------------------------------------------------------

def start(argv: list[str], name: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = select.select([proc.stdout], [], [], 300)[0]
    line = proc.stdout.readline().decode() if ready else ""
    if "http://127.0.0.1:" not in line:
        proc.kill()
        sys.exit(f"{name} did not start: {line!r} {proc.stderr.read().decode()[-1500:]}")
    return proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])


def dlkit_server(run: str, backend: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "dlkit.cli.main", "serve", run, "--port", "0", "--backend", backend, *flags]


# ---- the load generator ----------------------------------------------------------------------------------------------

def requests_for(files: list[Path]) -> list[bytes]:
    """One complete HTTP request per JPEG, built once, so the client spends almost nothing per request."""
    out = []
    for f in files:
        body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{f.name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode() + f.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


async def _client(port: int, payloads: list[bytes], counter: list, total: int, deadline: float, latencies: list,
                  errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while counter[0] < total and time.perf_counter() < deadline:
            i = counter[0]
            counter[0] += 1
            started = time.perf_counter()
            writer.write(payloads[i % len(payloads)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
    finally:
        writer.close()


async def _load(port: int, payloads: list[bytes], clients: int, total: int, cap_s: float) -> dict:
    counter, latencies, errors = [0], [], []
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, payloads, counter, total, started + cap_s, latencies, errors)
                           for _ in range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"req_s": len(latencies) / wall, "p50_ms": pick(0.50), "p99_ms": pick(0.99), "n": len(latencies),
            "errors": len(errors), "capped": len(latencies) < total}


def load(port: int, payloads: list[bytes], clients: int, total: int, cap_s: float) -> dict:
    return asyncio.run(_load(port, payloads, clients, total, cap_s))


# ---- the comparison --------------------------------------------------------------------------------------------------

def train_run(model: str, out: Path) -> str:
    if not HYMENOPTERA.is_dir():
        sys.exit(f"skipped: {HYMENOPTERA} not found (set DLKIT_HYMENOPTERA_DIR)")
    subprocess.run([sys.executable, "-m", "dlkit.cli.main", "train", "--data", str(HYMENOPTERA), "--model", model,
                    "--epochs", "3", "--out", str(out), "-q", "--no-tensorboard", "--no-report"], check=True)
    return str(out)


def measure(servers: dict[str, list[str]], payloads: list[bytes], args) -> dict:
    """Start every server, then interleave: each repeat visits every server at every concurrency, so a change in
    the machine's load (it is shared) touches all of them alike."""
    procs = {name: start(argv, name) for name, argv in servers.items()}
    results: dict = {}
    try:
        for name, (_, port) in procs.items():  # warm every server up at the highest concurrency
            load(port, payloads, max(args.clients), 4 * max(args.clients), args.cap)
        for r in range(args.repeat):
            for clients in args.clients:
                for name, (proc, port) in procs.items():
                    total = args.requests if clients > 1 else max(50, args.requests // 4)
                    server_cpu, client_cpu = cpu_seconds(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
                    res = load(port, payloads, clients, total, args.cap)
                    res["cpu_ms"] = (cpu_seconds(proc.pid) - server_cpu) / max(1, res["n"]) * 1000
                    res["client_ms"] = _cpu_since(client_cpu) / max(1, res["n"]) * 1000
                    res["mean_batch"] = _mean_batch(port) if name != "naive" else 1.0
                    results.setdefault((name, clients), []).append(res)
                    print(f"  repeat {r + 1} {name:<14} {clients:>2} clients: {res['req_s']:7.1f} req/s  "
                          f"p50 {res['p50_ms']:7.1f} ms  p99 {res['p99_ms']:7.1f} ms  batch {res['mean_batch']:4.1f}"
                          f"  CPU per request: server {res['cpu_ms']:.2f} ms, load generator {res['client_ms']:.2f} ms"
                          + (f"  {res['errors']} errors" if res["errors"] else "")
                          + ("  (time cap)" if res["capped"] else ""), flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(60)
    return results


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, all its threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_since(before) -> float:
    now = resource.getrusage(resource.RUSAGE_SELF)
    return now.ru_utime + now.ru_stime - before.ru_utime - before.ru_stime


def compare(run: str, payloads: list[bytes], args) -> None:
    servers = {"naive": [sys.executable, __file__, "--naive-server", run],
               "dlkit torch": dlkit_server(run, "torch"), "dlkit onnx": dlkit_server(run, "onnx")}
    servers = {k: v for k, v in servers.items() if k.split()[-1] in args.only}
    print_table(measure(servers, payloads, args), args.clients, list(servers), "naive")


def grid(run: str, payloads: list[bytes], args) -> None:
    """dlkit torch over settings BATCH:WAIT_MS[:THREADS[:DECODE_WORKERS]]; the ratios are against the first."""
    servers = {}
    for config in args.configs.split(","):
        batch, wait, *more = config.split(":")
        flags, name = ["--max-batch", batch, "--max-wait-ms", wait], f"b{batch} w{wait}"
        for flag, short, value in zip(("--threads", "--decode-workers"), ("t", "d"), more):
            flags, name = flags + [flag, value], f"{name} {short}{value}"
        servers[name] = dlkit_server(run, "torch", *flags)
    print_table(measure(servers, payloads, args), args.clients, list(servers), next(iter(servers)))


def print_table(results: dict, clients_list: list[int], names: list[str], reference: str) -> None:
    print(f"\nmedians of {len(results[(names[0], clients_list[0])])} repeats; ratios against {reference!r}, measured "
          f"in the same run; cpu ms: the server's CPU time per request; load average now {os.getloadavg()[0]:.1f}:")
    print(f"{'server':<14} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} {'cpu ms':>7} "
          f"{'req/s x':>8} {'p50 x':>7} {'p99 x':>7}")
    for clients in clients_list:
        ref = results.get((reference, clients))
        for name in names:
            rows = results[(name, clients)]
            rps, p50, p99, batch, cpu = (median([r[k] for r in rows])
                                         for k in ("req_s", "p50_ms", "p99_ms", "mean_batch", "cpu_ms"))
            ratio = ""
            if ref and name != reference:
                rr, r50, r99 = (median([r[k] for r in ref]) for k in ("req_s", "p50_ms", "p99_ms"))
                ratio = f"{rps / rr:8.2f} {p50 / r50:7.2f} {p99 / r99:7.2f}"
            print(f"{name:<14} {clients:>7} {rps:8.1f} {p50:8.1f} {p99:8.1f} {batch:6.1f} {cpu:7.2f} {ratio}")


def _mean_batch(port: int) -> float:
    """The mean size of the server's latest batches (from /health), i.e. those of the measurement just made."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as r:
        sizes = json.loads(r.read())["last_batch_sizes"]
    return sum(sizes) / max(1, len(sizes))


def http_stack() -> str:
    """What uvicorn's "auto" picks here: httptools or h11 for HTTP, uvloop or asyncio for the loop."""
    import importlib.util

    found = importlib.util.find_spec
    return f"{'httptools' if found('httptools') else 'h11'} + {'uvloop' if found('uvloop') else 'asyncio'}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a run folder to serve (default: train --model on hymenoptera first)")
    p.add_argument("--model", default="quick", help="model trained when --run is not given (default quick)")
    p.add_argument("--clients", default="1,8,32", type=lambda t: [int(x) for x in t.split(",")])
    p.add_argument("--requests", type=int, default=200, help="requests per measurement (a quarter at 1 client)")
    p.add_argument("--cap", type=float, default=60, help="seconds a measurement may last at most")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="naive,torch,onnx", type=lambda t: t.split(","))
    p.add_argument("--grid", action="store_true", help="measure dlkit torch over --configs")
    p.add_argument("--configs", default="1:0,4:2,8:2,16:2,32:2,16:0,16:5,16:2:1",
                   help="--grid settings, BATCH:WAIT_MS[:THREADS[:DECODE_WORKERS]] each (the first is the reference)")
    p.add_argument("--naive-server", metavar="RUN", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.naive_server:
        return run_naive(args.naive_server)
    run = args.run or train_run(args.model, Path(tempfile.mkdtemp(prefix="dlkit-bench-serve-")) / "run")
    files = sorted((HYMENOPTERA / "val").rglob("*.jpg"))
    if not files:
        sys.exit(f"skipped: no JPEGs under {HYMENOPTERA / 'val'}")
    payloads = requests_for(files)
    print(f"model {run}; {len(files)} JPEG uploads, {sum(map(len, payloads)) / len(payloads) / 1024:.0f} KB each on "
          f"average; {os.cpu_count()} CPUs; uvicorn on {http_stack()}; load average {os.getloadavg()[0]:.1f}")
    (grid if args.grid else compare)(run, payloads, args)


if __name__ == "__main__":
    main()
