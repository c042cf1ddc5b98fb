"""A local fake Google Cloud Storage for tests: gcp-storage-emulator plus a TLS proxy.

``GcsEmulator`` starts, on free localhost ports,

* gcp-storage-emulator (in memory, in this process), with a bucket, and
* a small HTTPS proxy that hands TensorFlow's GCS requests to that emulator,

and gives the environment a *separate* process needs for all of its gs:// I/O
to land in the emulator (``env()``), a google-cloud-storage client on it
(``client()``, ``list_objects()``, ``read()``), and ``stop()``.

The storage layers of a jaxcl run reach the emulator in two ways:

* **Directly**, because they take the endpoint from the environment:
  google-cloud-storage (``STORAGE_EMULATOR_HOST``; orbax queries checkpoint
  directories with it) and TensorStore, which writes orbax's array data
  (``TENSORSTORE_GCS_HTTP_URL``, with ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` so that
  it asks no metadata server for credentials).
* **Through the proxy**: TensorFlow's gs:// filesystem, which etils.epath uses
  for gs:// paths when TensorFlow is installed (so config.json, metrics.jsonl,
  results.json, plots, orbax's directory operations) and which TensorBoard's
  ``EventFileWriter`` uses. It has the endpoints ``https://www.googleapis.com``
  and ``https://storage.googleapis.com`` compiled in and no setting to change
  them. It does use libcurl, though, which honours ``HTTPS_PROXY``, and it
  reads the CA bundle from ``CURL_CA_BUNDLE``: the proxy accepts the
  ``CONNECT``, terminates TLS with a self-signed certificate for those host
  names (trusted through ``CURL_CA_BUNDLE``) and relays the plain HTTP inside
  to the emulator. ``NO_PROXY=127.0.0.1`` keeps the direct layers direct.

These variables are read once per process (TensorStore and TensorFlow cache
them at first use), so the code under test must run in a subprocess started
with ``env()``; setting them in an already running pytest process is too late.

The self-signed certificate is made with the ``openssl`` command-line tool.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from http import HTTPStatus

from gcp_storage_emulator import server as _emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects as _emulator_objects

__all__ = ["GcsEmulator"]

HOST = "127.0.0.1"
# The host names TensorFlow's GCS filesystem sends its requests to.
GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")


# --------------------------------------------------------------------------------------
# Emulator patches
# --------------------------------------------------------------------------------------

_patched = False


def _patch_emulator() -> None:
    """Fixes three gcp-storage-emulator bugs that TensorFlow and TensorStore run into.

    1. **Zero-byte media uploads.** TensorFlow creates a directory as an empty
       object named ``dir/`` (``uploadType=media`` with an empty body). The
       emulator parses an empty body as ``None`` and its media-upload handler
       then fails on ``len(None)``; real GCS stores an empty object.
    2. **Chunked bodies that also carry Content-Length.** TensorFlow's libcurl
       sends resumable-upload ``PUT`` bodies with both ``Content-Length`` and
       ``Transfer-Encoding: chunked``. RFC 7230 (section 3.3.3) says chunked
       wins; the emulator reads ``Content-Length`` raw bytes instead and stores
       the chunk framing (``"8\\r\\nhi th"`` for ``"hi there"``). Dropping
       ``Content-Length`` makes it decode the chunks.
    3. **Generations on downloads.** TensorStore (orbax's OCDBT checkpoints)
       re-reads ``manifest.ocdbt`` with ``ifGenerationNotMatch=<generation>``
       and takes the object's generation from the ``x-goog-generation``
       response header. The emulator sends no such header and ignores the
       precondition, and TensorStore fails with "Malformed StorageGeneration".
       The patched download sends the header and answers the two read
       preconditions as GCS does (304 Not Modified, 412 Precondition Failed).

    The patches replace module attributes that the emulator looks up at call
    time (``objects.get`` calls ``download`` by its global name for
    ``?alt=media``, TensorStore's route); applying them twice is a no-op.
    """
    global _patched
    if _patched:
        return

    original_media_upload = _emulator_objects._media_upload

    def media_upload(request, response, storage):
        if request.data is None:  # an empty body, not a missing one
            request._data = b""
        return original_media_upload(request, response, storage)

    original_read_raw_data = _emulator_server._read_raw_data

    def read_raw_data(handler):
        headers = handler.headers
        chunked = (headers.get("Transfer-Encoding") or "").lower() == "chunked"
        if chunked and headers.get("Content-Length"):
            del headers["Content-Length"]
        return original_read_raw_data(handler)

    original_download = _emulator_objects.download

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except NotFound:
            return original_download(request, response, storage, *args, **kwargs)  # its 404
        generation = str(obj["generation"])
        response["x-goog-generation"] = generation
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
        not_match = request.query.get("ifGenerationNotMatch")
        match = request.query.get("ifGenerationMatch")
        if not_match and not_match[0] == generation:
            response.status = HTTPStatus.NOT_MODIFIED
            return None
        if match and match[0] != generation:
            response.status = HTTPStatus.PRECONDITION_FAILED
            return None
        return original_download(request, response, storage, *args, **kwargs)

    _emulator_objects._media_upload = media_upload
    _emulator_objects.download = download
    # Every read of a missing object (existence checks, a first save) is logged
    # as two ERROR lines, which would bury a failing test's real log.
    logging.getLogger("gcp_storage_emulator.storage").setLevel(logging.CRITICAL)
    _emulator_server._read_raw_data = read_raw_data
    _patched = True


# --------------------------------------------------------------------------------------
# TLS-terminating proxy
# --------------------------------------------------------------------------------------


def _make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate (and its key) for ``GOOGLE_HOSTS``, made by ``openssl``.

    It is its own CA, so passing it as ``CURL_CA_BUNDLE`` makes libcurl trust
    the proxy's TLS for those names (the names are in subjectAltName, which is
    what libcurl checks).
    """
    cert, key = os.path.join(directory, "fake_google.pem"), os.path.join(directory, "key.pem")
    san = ",".join(f"DNS:{host}" for host in GOOGLE_HOSTS)
    command = [
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"),
        *("-keyout", key, "-out", cert, "-subj", f"/CN={GOOGLE_HOSTS[0]}"),
        *("-addext", f"subjectAltName={san}"),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


def _read_request_head(sock: socket.socket) -> bytes:
    """Bytes from ``sock`` up to and including the end of the first request's headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _pump(client: socket.socket, upstream: socket.socket) -> None:
    """Copies bytes both ways between two sockets until either side closes.

    One thread with ``select`` rather than a thread per direction, so that the
    TLS socket is never read and written from two threads at once. Bytes that
    OpenSSL has already decrypted (``pending()``) do not show up in
    ``select``, so they are drained first.
    """
    peers = {client: upstream, upstream: client}
    while True:
        ready = [s for s in peers if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready, _, _ = select.select(list(peers), [], [], 60.0)
            if not ready:
                return  # idle for a minute: give up on the connection
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


class _TlsProxy:
    """An HTTP proxy that sends every request, whatever its host, to the emulator.

    * ``CONNECT host:443`` (how libcurl tunnels ``https://`` through a proxy):
      answers 200, terminates TLS with the self-signed certificate and relays
      the decrypted HTTP to the emulator unchanged. The ``Host`` header stays
      ``www.googleapis.com``, which the emulator ignores for routing.
    * A plain ``GET http://host/path`` (absolute URI, how a client asks a
      proxy for ``http://``): the emulator builds resumable-upload
      ``Location`` URLs from the request's ``Host`` header, so TensorFlow's
      follow-up ``PUT``s go to ``http://www.googleapis.com/...``; the URI is
      cut down to its path and relayed to the emulator.

    The emulator answers HTTP/1.0 and closes each connection after one
    response, so one request line per connection is all that needs rewriting.
    """

    def __init__(self, upstream_port: int, cert: str, key: str):
        self._upstream = (HOST, upstream_port)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._listener = socket.create_server((HOST, 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="gcs-tls-proxy", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed by stop()
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        upstream = None
        try:
            head = _read_request_head(client)
            request_line, _, rest = head.partition(b"\r\n")
            method, target, version = request_line.split(b" ", 2)
            upstream = socket.create_connection(self._upstream)
            if method == b"CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                client = self._tls.wrap_socket(client, server_side=True)
            else:
                if b"://" in target:  # http://host/path?query -> /path?query
                    target = b"/" + target.split(b"://", 1)[1].partition(b"/")[2]
                upstream.sendall(b" ".join([method, target, version]) + b"\r\n" + rest)
            _pump(client, upstream)
        except (OSError, ValueError):
            pass  # a client that went away or sent garbage: drop the connection
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    sock.close()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()


# --------------------------------------------------------------------------------------
# The public helper
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class GcsEmulator:
    """A fake GCS with one bucket, reachable by every storage layer jaxcl uses.

    Use as a context manager or call ``stop()``::

        with GcsEmulator("jaxcl-test") as gcs:
            subprocess.run([...], env={**os.environ, **gcs.env()})
            gcs.list_objects("run/")

    Attributes:
      bucket: the bucket's name (GCS needs at least three characters).
      url: the emulator's endpoint, ``http://127.0.0.1:PORT``.
      proxy_url: the TLS proxy's endpoint, ``http://127.0.0.1:PORT``.
    """

    def __init__(self, bucket: str = "jaxcl-test"):
        if len(bucket) < 3:
            raise ValueError(f"GCS bucket names have 3 or more characters, got {bucket!r}")
        if shutil.which("openssl") is None:
            raise RuntimeError("the openssl command is needed to make the proxy's certificate")
        _patch_emulator()
        self.bucket = bucket
        self._tmpdir = tempfile.mkdtemp(prefix="gcs_emulator_")
        self._cert, key = _make_certificate(self._tmpdir)
        port = _free_port()
        self._server = _emulator_server.create_server(
            HOST, port, in_memory=True, default_bucket=bucket
        )
        self._server.start()
        self.url = f"http://{HOST}:{port}"
        self._proxy = _TlsProxy(port, self._cert, key)
        self.proxy_url = f"http://{HOST}:{self._proxy.port}"
        self._client = None

    def env(self) -> dict[str, str]:
        """The variables a subprocess needs for all its gs:// I/O to reach this emulator."""
        no_proxy = f"{HOST},localhost"
        return {
            # Direct: google-cloud-storage, and TensorStore (with a token so it skips auth).
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",  # TensorFlow reads it too
            # Through the proxy: TensorFlow's gs:// filesystem (libcurl).
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            "HTTP_PROXY": self.proxy_url,
            "http_proxy": self.proxy_url,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "CURL_CA_BUNDLE": self._cert,
            # A failing request should fail the test quickly, not retry for minutes.
            "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        }

    def client(self):
        """A google-cloud-storage client on the emulator (anonymous credentials)."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self._client = storage.Client(
                project="test",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.url},
            )
        return self._client

    def list_objects(self, prefix: str = "") -> dict[str, int]:
        """``{object name: size in bytes}`` of the bucket's objects under ``prefix``."""
        blobs = self.client().list_blobs(self.bucket, prefix=prefix)
        return {blob.name: blob.size for blob in blobs}

    def read(self, name: str) -> bytes:
        """The content of the object ``name``."""
        return self.client().bucket(self.bucket).blob(name).download_as_bytes()

    def stop(self) -> None:
        """Stops the proxy and the emulator and deletes the certificate."""
        self._proxy.stop()
        self._server.stop()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> GcsEmulator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
