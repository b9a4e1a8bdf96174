"""Throughput of a served prognosis model over REST: ``mlflow models serve`` and HTTP requests of 256 patients.

    python benchmarks/bench_rest.py [--patients 600] [--epochs 1] [--workers 1 2] [--requests 6]

Trains the quickstart architecture briefly (as ``bench_prognosis.py`` does), logs its predictor to a
local MLflow store (``Prognosis.log_to_mlflow``: the model a deployment serves), and for each
``--workers W`` starts ``mlflow models serve --env-manager local --workers W`` on 127.0.0.1 (with
``OMP_NUM_THREADS=1`` when W > 1, the README's recipe). W client threads then post requests of 256
patients (all six modalities where the patient has them; ECG and slides as base64 floats,
``encode_ecg`` / ``encode_slides``; the time series as columns) in a loop; the rate is all patients
answered / the wall time. Three forms of the same body:

- ``strings``: each modality's value a JSON string inside the record (the README's example; the
  server parses the request, then the model parses each string again);
- ``objects``: each modality's value as a JSON value (parsed once, by the server);
- ``objects, as the model reads them``: the same with each ECG resampled by the client to the rate
  the model reads (``encode_ecg(..., resample_to=rate)``: a fifth of the bytes for 500 Hz records
  read at 100 Hz) and each patient's slides cut to the patches the model reads
  (``encode_slides(slides, max_patches)``); the same predictions.

The request bodies are serialised before the clock starts; the client threads (sending and
receiving over loopback) share the machine's cores with the server. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_prognosis import in_memory, train_predictor  # noqa: E402

BATCH = 256


def wire_records(records: list[dict], cells: str, ecg_rate: float | None = None,
                 max_patches: int | None = None) -> list[dict]:
    """``dataframe_records`` rows: ECG and slides as base64 floats (the ECG resampled to
    ``ecg_rate``, the slides cut to ``max_patches``, when given); each modality a JSON string
    (``cells="strings"``) or a JSON value (``"objects"``)."""
    from clinfuse.experiments import encode_ecg, encode_slides

    rows = []
    for r in records:
        row = {"patient_id": r["patient_id"]}
        for m, v in r.items():
            if m == "patient_id":
                continue
            if m == "ecg":
                v = encode_ecg(v["signal"], v["fs"], v["leads"], resample_to=ecg_rate)
            elif m == "wsi":
                v = encode_slides([s["features"] for s in v], max_patches)
            v = json.loads(json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
            row[m] = json.dumps(v) if cells == "strings" else v
        rows.append(row)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_uri: str, workers: int, env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow models serve`` on a free port; returns the process and base URL once /ping answers."""
    import requests

    port = _free_port()
    exe = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if workers > 1:
        env["OMP_NUM_THREADS"] = "1"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(exe), "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(base + "/ping", timeout=2).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer within 180 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(1)


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def post(base: str, body: bytes) -> bytes:
    import requests

    resp = requests.post(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=600)
    if resp.status_code != 200:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:2000]}")
    return resp.content


def throughput(base: str, body: bytes, clients: int, requests_each: int) -> tuple[float, float]:
    """(patients/s over all clients, median seconds per request)."""
    times: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(requests_each):
                t0 = time.perf_counter()
                post(base, body)
                times.append(time.perf_counter() - t0)
        except BaseException as err:  # noqa: BLE001 - reported after the threads join
            errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return clients * requests_each * BATCH / wall, float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--requests", type=int, default=6, help="timed requests per client thread")
    p.add_argument("--precision", default=None, help="CLINFUSE_PRECISION of the server (default: the model's)")
    a = p.parse_args()
    if a.patients < BATCH:
        p.error(f"--patients must be at least {BATCH}")

    import mlflow

    from clinfuse.experiments.cohort_records import records_from_cohort

    work = Path(tempfile.mkdtemp(prefix="clinfuse-rest-"))
    prog, dm, root = train_predictor(work, a.patients, a.epochs)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-rest")
    with mlflow.start_run():
        info = prog.log_to_mlflow()
    mlflow.set_tracking_uri(None)
    ids = list(dm.cohort.splits["test"]) + list(dm.cohort.splits["val"]) + list(dm.cohort.splits["train"])
    records = [in_memory(r) for r in records_from_cohort(root, ids[:BATCH])]
    check = prog.predict(records[:4], contributions=False)
    ecg_fs, budget = float(prog.states["ecg"]["config"]["fs"]), int(prog.states["wsi"]["config"]["max_patches"])
    bodies = {}
    for cells, reads in (("strings", (None, None)), ("objects", (None, None)),
                         (f"objects, as read (ECG {ecg_fs:g} Hz, <= {budget} patches)", (ecg_fs, budget))):
        rows = wire_records(records, cells.split(",")[0], *reads)
        for contrib in (False, True):
            bodies[cells, contrib] = json.dumps({"dataframe_records": rows, "params": {"contributions": contrib}}).encode()
    env = {"MLFLOW_TRACKING_URI": uri, **({"CLINFUSE_PRECISION": a.precision} if a.precision else {})}
    table = []
    for workers in a.workers:
        proc, base = start_server(info.model_uri, workers, env, work / f"server-{workers}.log")
        try:
            for (cells, contrib), body in bodies.items():  # every form answers Prognosis.predict's risks
                if not contrib:
                    answer = json.loads(post(base, body))["predictions"]
                    got = [json.loads(r["prediction"])["risk"] for r in answer[:4]]
                    if not np.allclose(got, [c["risk"] for c in check], rtol=1e-5, atol=1e-6):
                        raise RuntimeError(f"{cells}: the served risks {got} differ from Prognosis.predict's "
                                           f"{[c['risk'] for c in check]}")
            for (cells, contrib), body in bodies.items():
                for _ in range(workers):  # warm-up: every worker process has answered once
                    post(base, body)
                rate, per_request = throughput(base, body, workers, a.requests)
                table.append((workers, cells, "yes" if contrib else "no", rate, per_request, len(body) / 1e6))
                print(f"[workers {workers}, {cells}, contributions {contrib}] {rate:.0f} patients/s", file=sys.stderr, flush=True)
        finally:
            stop_server(proc)
    print(f"\n`mlflow models serve` of the quickstart architecture ({a.patients} patients, {a.epochs} epoch(s)); requests of "
          f"{BATCH} patients, ECG and slides as base64; {os.cpu_count()} CPUs shared by the server and the clients")
    print("\n| server workers | modality cells | contributions | patients/s | s per request (median) | request MB |")
    print("|---|---|---|---|---|---|")
    for w, cells, contrib, rate, per_request, mb in table:
        print(f"| {w} | {cells} | {contrib} | {rate:.0f} | {per_request:.2f} | {mb:.1f} |")


if __name__ == "__main__":
    main()
