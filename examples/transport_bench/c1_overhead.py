"""Usage: [N=150] python3 c1_overhead.py BIN_A BIN_B
c=1 on one keep-alive connection: client latency vs the server's own in-process stage times
(timing_ms: decode + preprocess + inference) for the same request. Median of N."""
import json, os, socket, statistics, subprocess, sys, time
CAT = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/fixtures/images/chelsea.jpg"), "rb").read()
N = int(os.environ.get("N", "150"))
def run(name, binary, port):
    p = subprocess.Popen([binary, "serve", "--addr", f"127.0.0.1:{port}", "--workers", "2"],
                         env=dict(os.environ, TAGGER_LOG="warn"), stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port)).close(); break
            except OSError: time.sleep(0.02)
        time.sleep(1.0)
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        req = (b"POST /v1/tags HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(CAT)) + CAT
        lat, work = [], []
        for i in range(N + 10):
            t = time.perf_counter()
            s.sendall(req)
            status = f.readline()
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""): break
                if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
            body = json.loads(f.read(length))
            dt = (time.perf_counter() - t) * 1e3
            if status.split()[1] != b"200" or "timing_ms" not in body:
                time.sleep(0.1); continue
            if i >= 10:
                lat.append(dt); work.append(sum(body["timing_ms"].values()))
        over = [a - b for a, b in zip(lat, work)]
        print(f"{name}: c=1 p50 {statistics.median(lat):.2f} ms, in-process stages p50 "
              f"{statistics.median(work):.2f} ms, HTTP overhead per request p50 "
              f"{statistics.median(over):.2f} ms (n={len(lat)})")
    finally:
        p.terminate(); p.wait()
# Usage: [N=150] python3 c1_overhead.py BIN_A BIN_B   (A, B, A, B)
for i, b in enumerate(sys.argv[1:] * 2):
    run(os.path.basename(b), b, 19300 + i)
