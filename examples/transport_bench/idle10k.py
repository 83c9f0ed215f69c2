"""10,000 idle keep-alive connections: server RSS growth, and a photo's latency meanwhile.
Usage: [N=10000] [SILENT=1] python3 idle10k.py BIN [BIN ...]   (each binary in turn, in one run)
SILENT=1: the connections never send a byte (else each sends GET /healthz and then idles)."""
import os, resource, socket, subprocess, sys, time, statistics
CAT = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/fixtures/images/chelsea.jpg"), "rb").read()
N = int(os.environ.get("N", "10000"))
SILENT = os.environ.get("SILENT") is not None
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))  # the hard limit here
os.makedirs("/tmp/tagger-transport-bench", exist_ok=True)

def run(name, binary, port):
    server = subprocess.Popen([binary, "serve", "--addr", f"127.0.0.1:{port}", "--workers", "2",
                               "--keep-alive-secs", "120", "--header-timeout-secs", "120"],
                              env=dict(os.environ, TAGGER_LOG="warn"),
                              stderr=open(f"/tmp/tagger-transport-bench/idle10k-{port}.log", "w"))
    def rss():
        for line in open(f"/proc/{server.pid}/status"):
            if line.startswith("VmRSS"): return int(line.split()[1])
    def photo():
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/tags HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(CAT) + CAT)
        data = b""
        while True:
            b = s.recv(65536)
            if not b: break
            data += b
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        return (time.perf_counter() - t) * 1e3
    try:
        for _ in range(600):
            try:
                photo(); break
            except Exception: time.sleep(0.05)
        before_photo = statistics.median(photo() for _ in range(15))
        time.sleep(0.5)
        base = rss()
        conns = []
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            if not SILENT:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            conns.append(s)
        ok = 0
        if not SILENT:
            for s in conns:
                d = s.recv(4096)
                ok += d.startswith(b"HTTP/1.1 200")
        time.sleep(1)
        held = rss()
        during_photo = statistics.median(photo() for _ in range(15))
        # still open? one byte of a new request on each would be answered; check a sample
        alive = 0
        for s in conns[:: max(1, N // 100)]:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            alive += s.recv(4096).startswith(b"HTTP/1.1 200")
        print(f"{name}: {'silent' if SILENT else str(ok) + '/' + str(N) + ' answered and'} held idle "
              f"(sample {alive}/{len(conns[::max(1, N // 100)])} still served); RSS {base/1024:.1f} MB -> {held/1024:.1f} MB "
              f"(+{(held-base)/1024:.1f} MB, {(held-base)*1024/N:.0f} B/conn); photo p50 "
              f"{before_photo:.1f} ms before, {during_photo:.1f} ms with {N} idle", flush=True)
        for s in conns: s.close()
    finally:
        server.terminate(); server.wait()

print(f"load: {open('/proc/loadavg').read().strip()}", flush=True)
for i, b in enumerate(sys.argv[1:]):
    run(os.path.basename(b) if len(sys.argv) > 2 else b, b, 18700 + i)
print(f"load: {open('/proc/loadavg').read().strip()}", flush=True)
