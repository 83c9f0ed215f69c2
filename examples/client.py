#!/usr/bin/env python3
"""A small tagger client using only the standard library.

    python3 examples/client.py examples/images/cat.jpg                 # tags, raw body
    python3 examples/client.py --multipart examples/images/cat.jpg     # tags, multipart/form-data
    python3 examples/client.py --digits examples/images/digit.png      # read a digit
    python3 examples/client.py a.jpg b.jpg c.jpg                       # several in one request

TAGGER_URL (default http://127.0.0.1:8080) says where the server is.
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import uuid

BASE = os.environ.get("TAGGER_URL", "http://127.0.0.1:8080")


def post(path, data, content_type):
    request = urllib.request.Request(BASE + path, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        # Errors are JSON too: {"error": {"code": ..., "message": ...}}.
        error = json.load(e)["error"]
        sys.exit(f"tagger answered {e.code} {error['code']}: {error['message']}")


def multipart(field, files):
    """A multipart/form-data body with one `field` part per (filename, bytes)."""
    boundary = uuid.uuid4().hex
    body = b""
    for filename, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def show(answer, digits):
    if digits:
        print(f"digit {answer['digit']} (confidence {answer['confidence']:.3f})")
        return
    if "warning" in answer:
        print("warning:", answer["warning"], file=sys.stderr)
    for tag in answer["tags"]:
        print(f"{tag['confidence']:.3f}  {tag['label']}  (class {tag['class_id']})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="+", help="one image, or several sent in one multipart request")
    parser.add_argument("--digits", action="store_true", help="read a hand-drawn digit instead of tagging")
    parser.add_argument("--multipart", action="store_true", help="send multipart/form-data instead of a raw body")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    files = []
    for name in args.image:
        with open(name, "rb") as f:
            files.append((os.path.basename(name), f.read()))
    path = "/v1/digits" if args.digits else f"/v1/tags?top_k={args.top_k}"
    if args.multipart or len(files) > 1:
        body, content_type = multipart("image", files)
    else:
        body, content_type = files[0][1], "application/octet-stream"
    answer = post(path, body, content_type)
    if len(files) == 1:
        show(answer, args.digits)
        return
    # Several images: {"results": [...]} in order; one bad image fails only its own entry.
    for name, result in zip(args.image, answer["results"]):
        print(f"== {name}")
        if "error" in result:
            print(f"error {result['error']['code']}: {result['error']['message']}")
        else:
            show(result, args.digits)


if __name__ == "__main__":
    main()
