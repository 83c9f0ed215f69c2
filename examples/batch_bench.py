#!/usr/bin/env python3
"""Times N images in one multipart request against N single requests sent one after another
(the same images, keep-alive connection), and prints the medians. Standard library only.

    python3 examples/batch_bench.py [--n 8] [--runs 15] [IMAGE]

TAGGER_URL (default http://127.0.0.1:8080) says where the server is.
"""
import argparse
import http.client
import os
import statistics
import time
import urllib.parse
import uuid

BASE = urllib.parse.urlsplit(os.environ.get("TAGGER_URL", "http://127.0.0.1:8080"))


def post(conn, path, body, content_type):
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200, (response.status, data[:300])
    return data


def multipart(images):
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.jpg\"\r\n\r\n".encode()
        + image + b"\r\n"
        for i, image in enumerate(images)
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default="examples/images/cat.jpg")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with open(args.image, "rb") as f:
        image = f.read()
    images = [image] * args.n
    body, content_type = multipart(images)
    conn = http.client.HTTPConnection(BASE.hostname, BASE.port or 80, timeout=120)
    post(conn, "/v1/tags", image, "image/jpeg")  # warm-up
    batch, singles = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        post(conn, "/v1/tags", body, content_type)
        batch.append(time.perf_counter() - start)
        start = time.perf_counter()
        for one in images:
            post(conn, "/v1/tags", one, "image/jpeg")
        singles.append(time.perf_counter() - start)
    b, s = statistics.median(batch) * 1e3, statistics.median(singles) * 1e3
    print(f"{args.n} images, {args.runs} runs, medians: one request {b:.0f} ms; "
          f"{args.n} sequential requests {s:.0f} ms; ratio {s / b:.2f}x")


if __name__ == "__main__":
    main()
