#!/usr/bin/env python3
"""fp8d serve end to end on the ref backend with a tiny qwen3 checkpoint (stdlib only).

Checks, each against something the daemon does not compute itself:
  - readiness and stop through a NOTIFY_SOCKET of our own (READY=1, STATUS=, STOPPING=1);
  - 32 concurrent client processes (fp8 generate --json, half through shared memory, half
    as chunk messages), distinct seeds and prompts: every token list equals `fp8d run`
    with the same options (the in-process reference), so no token is lost or duplicated;
  - a text prompt (fp8 generate) and a chat turn (fp8 chat): the streamed text equals
    `fp8d run --no-chat` and `fp8d run --chat` (tokenizer, template, detokenizer);
  - a client SIGKILLed mid-stream: the daemon logs the session closed within a second and
    keeps serving;
  - a reader that stops reading (libfp8d through ctypes): the stream is cancelled after
    --stream-timeout with a message naming backpressure, other clients unaffected;
  - fp8d_cancel mid-stream ends the stream with -ECANCELED; Ctrl-C on fp8 cancels (130);
  - SIGHUP reopens the log file;
  - SIGTERM mid-stream: the client gets shutting_down, the daemon exits 0, and none of
    the segments it created is left in /dev/shm;
  - socket activation through systemd-socket-activate (skipped with a message if absent);
  - bad serve options exit 2 with a line naming the option.
Every wait is bounded; polling loops only pace bounded checks of observable state.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import ctypes
import errno
import json
import shutil

BUILD = os.environ.get("FP8D_BUILD", "build")
FP8D = os.path.join(BUILD, "fp8d")
FP8 = os.path.join(BUILD, "fp8")
N_CLIENTS = 32
MAX_TOKENS = 4
fails = []
t_start = time.monotonic()


class Token(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int32), ("text", ctypes.c_char_p), ("text_len", ctypes.c_size_t)]


def phase(name):
    print("%6.1f s  %s" % (time.monotonic() - t_start, name), flush=True)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    fails.append(msg)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


class Notify:
    """A NOTIFY_SOCKET listener. A thread drains it all the time, as systemd does: a Unix
    datagram queue holds only a few messages, and sd_notify blocks when it is full."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.seen = []
        self.cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        while True:
            m = self.sock.recv(4096).decode()
            with self.cond:
                self.seen.append(m)
                self.cond.notify_all()

    def wait(self, pattern, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: any(pattern in m for m in self.seen), timeout)


def wait_file(path, pattern, timeout):
    """Bounded wait until the file (the daemon's log) has a line matching pattern."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                m = re.search(pattern, f.read())
                if m:
                    return m
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return None


def read_until_output(p, timeout):
    """Blocks until the process printed something (it is mid-stream then)."""
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    return bool(r) and len(os.read(p.stdout.fileno(), 64)) > 0


def sampling(seed):
    return ["--seed", str(seed), "--temperature", "0.9", "--top-k", "50",
            "--max-tokens", str(MAX_TOKENS), "--ignore-eos"]


def prompt_of(i):
    # distinct prompts, some sharing a prefix (the prefix cache must not change outputs)
    return ",".join(str(100 + (i * 37 + k * 11) % 5000) for k in range(3 + i % 5))


def ctypes_env():
    """libfp8d is loaded into this Python: a sanitizer build needs its runtime first."""
    env = dict(os.environ)
    r = subprocess.run(["ldd", os.path.join(BUILD, "libfp8d.so")], capture_output=True,
                       text=True)
    m = re.search(r"(/\S*libasan\.so\S*)", r.stdout)
    if m:
        env["LD_PRELOAD"] = m.group(1)
        env["ASAN_OPTIONS"] = "detect_leaks=0"  # the interpreter's own allocations
    return env


def ctypes_checks(ep, log):
    """In a child process (see ctypes_env): a reader that stops reading, and a cancel."""
    lib = ctypes.CDLL(os.path.join(BUILD, "libfp8d.so"))
    lib.fp8d_last_error.restype = ctypes.c_char_p
    c, st = ctypes.c_void_p(), ctypes.c_void_p()
    ids = (ctypes.c_int32 * 3)(1, 2, 3)
    check(lib.fp8d_connect(ep.encode(), 0, 60000, ctypes.byref(c)) == 0, "ctypes connect")
    check(lib.fp8d_generate_tokens(c, ids, 3, None, ctypes.byref(st)) == 0,
          "ctypes generate")
    check(wait_file(log, r"backpressure timeout", 60) is not None,
          "slow reader: no backpressure timeout in the log")
    other = subprocess.run([FP8, "--endpoint", ep, "generate", "--tokens", "5,6",
                            "--max-tokens", "2", "--ignore-eos", "--json"],
                           capture_output=True, text=True, timeout=60)
    check(other.returncode == 0, "another client during backpressure: %s" % other.stderr)
    tok = Token()
    n = 0
    while (rc := lib.fp8d_stream_next(st, ctypes.byref(tok), 10000)) == 1:
        n += 1
    check(rc == -errno.ECANCELED and b"backpressure" in lib.fp8d_last_error(c),
          "slow reader: rc %d (%s)" % (rc, lib.fp8d_last_error(c)))
    check(3 <= n < 20, "slow reader: %d tokens delivered (a 256-byte ring holds ~10)" % n)
    lib.fp8d_stream_free(st)

    # cancel mid-stream: the tokens before the cancel, then -ECANCELED
    check(lib.fp8d_generate_tokens(c, ids, 3, None, ctypes.byref(st)) == 0,
          "cancel: generate")
    check(lib.fp8d_stream_next(st, ctypes.byref(tok), 30000) == 1, "cancel: no first token")
    check(lib.fp8d_cancel(st) == 0, "cancel: fp8d_cancel")
    while (rc := lib.fp8d_stream_next(st, ctypes.byref(tok), 30000)) == 1:
        pass
    check(rc == -errno.ECANCELED, "cancel: stream ended with %d" % rc)
    lib.fp8d_stream_free(st)
    lib.fp8d_close(c)


def main():
    tmp = tempfile.mkdtemp(prefix="fp8d-e2e-daemon-")
    daemon = None
    try:
        # bad serve options: exit status 2 and a line naming the option
        for args, what in ((["--ring-bytes", "300"], "--ring-bytes"),
                           (["--stream-timeout", "0"], "--stream-timeout"),
                           (["--log-level", "loud"], "--log-level"),
                           (["--allow-gid", "no-such-group-fp8d"], "--allow-gid"),
                           (["--synthetic", "qwen3-tiny", "--config", "x"], "--config"),
                           ([], "--model")):
            r = subprocess.run([FP8D, "serve"] + args, capture_output=True, text=True,
                               timeout=30)
            check(r.returncode == 2 and what in r.stderr,
                  "serve %s: exit %d, %s" % (" ".join(args), r.returncode, r.stderr.strip()))

        model = os.path.join(tmp, "m")
        subprocess.run([FP8D, "mkmodel", "--arch", "qwen3", "--out", model], check=True,
                       stdout=subprocess.DEVNULL)
        common = ["--model", model, "--backend", "ref", "--max-model-len", "128",
                  "--max-num-seqs", str(N_CLIENTS)]

        # the in-process reference, 2 at a time
        ref = {}
        procs = []
        for i in range(N_CLIENTS):
            procs.append((i, subprocess.Popen([FP8D, "run"] + common + sampling(1000 + i) +
                                              ["--tokens", prompt_of(i)],
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True)))
            if len(procs) == 2 or i == N_CLIENTS - 1:
                for j, p in procs:
                    out, err = p.communicate(timeout=120)
                    if not check(p.returncode == 0, "fp8d run %d: %s" % (j, err.strip())):
                        continue
                    ref[j] = [int(t) for t in out.split()]
                procs = []
        # text prompts: as is, and as one user turn through the chat template
        text_prompt = "Write a haiku about FP8."
        text_ref = {}
        for mode in ("--no-chat", "--chat"):
            r = subprocess.run([FP8D, "run"] + common + sampling(7) + [mode, text_prompt],
                               capture_output=True, text=True, timeout=120)
            if check(r.returncode == 0, "fp8d run %s: %s" % (mode, r.stderr.strip())):
                text_ref[mode] = r.stdout.strip("\n")
        phase("%d reference runs" % (N_CLIENTS + 2))

        ep = "ipc://" + os.path.join(tmp, "s.sock")
        log = os.path.join(tmp, "daemon.log")
        notify = Notify(os.path.join(tmp, "notify"))
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        daemon = subprocess.Popen([FP8D, "serve"] + common +
                                  ["--endpoint", ep, "--stream-timeout", "400",
                                   "--ring-bytes", "256", "--log-file", log,
                                   "--log-level", "debug"], env=env)
        if not check(notify.wait("READY=1", 60), "no READY=1 from the daemon"):
            return
        check(notify.wait("STATUS=serving m", 5), "no STATUS= line after READY")
        phase("daemon ready")

        # 32 concurrent clients
        clients = []
        for i in range(N_CLIENTS):
            extra = ["--no-shm"] if i % 2 else []
            clients.append(subprocess.Popen(
                [FP8, "--endpoint", ep, "--timeout", "60000"] + extra +
                ["generate"] + sampling(1000 + i) + ["--tokens", prompt_of(i), "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for i, p in enumerate(clients):
            out, err = p.communicate(timeout=120)
            if not check(p.returncode == 0, "client %d: %s" % (i, err.strip())):
                continue
            got = json.loads(out)
            check(got["tokens"] == ref.get(i), "client %d (%s): tokens %s, fp8d run gave %s" %
                  (i, "chunks" if i % 2 else "ring", got["tokens"], ref.get(i)))
            check(got["finish_reason"] == "length" and
                  got["usage"]["completion_tokens"] == MAX_TOKENS,
                  "client %d: finish %s usage %s" % (i, got["finish_reason"], got["usage"]))
        phase("%d concurrent clients" % N_CLIENTS)

        r = subprocess.run([FP8, "--endpoint", ep, "generate"] + sampling(7) + [text_prompt],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and r.stdout.strip("\n") == text_ref.get("--no-chat"),
              "text prompt: %r, fp8d run gave %r (%s)" % (r.stdout, text_ref.get("--no-chat"),
                                                          r.stderr))
        r = subprocess.run([FP8, "--endpoint", ep, "chat"] + sampling(7), input=text_prompt,
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and r.stdout.strip("\n") == text_ref.get("--chat"),
              "chat: %r, fp8d run --chat gave %r (%s)" % (r.stdout, text_ref.get("--chat"),
                                                         r.stderr))
        phase("text prompt and chat")

        long_gen = [FP8, "--endpoint", ep, "--timeout", "60000", "generate", "--tokens",
                    "1,2,3", "--max-tokens", "120", "--ignore-eos", "--temperature", "0"]

        # a client SIGKILLed mid-stream
        p = subprocess.Popen(long_gen, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if check(read_until_output(p, 30), "killed client: no output"):
            t0 = time.monotonic()
            p.kill()
            p.wait()
            m = wait_file(log, r"session \d+ \([^)]*pid %d\) closed" % p.pid, 5)
            if check(m is not None, "killed client: session not closed"):
                check(time.monotonic() - t0 < 1.5, "killed client: took %.2f s" %
                      (time.monotonic() - t0))
        # Ctrl-C on fp8 mid-stream: it cancels the generation and exits 130
        p = subprocess.Popen(long_gen, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check(read_until_output(p, 30), "Ctrl-C: no output"):
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
            check(p.returncode == 130, "Ctrl-C: fp8 exit %d, stderr %s" % (p.returncode, err))
        r = subprocess.run([FP8, "--endpoint", ep, "info"], capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 0 and '"ref"' in r.stdout,
              "info after a killed client: %s %s" % (r.stdout, r.stderr))
        phase("killed client, Ctrl-C")

        # a reader that stops reading (libfp8d through ctypes: alive, answering
        # heartbeats, but never calling fp8d_stream_next): its ring (256 bytes) fills,
        # the stream is cut after 400 ms, other clients carry on
        r = subprocess.run([sys.executable, __file__, "--ctypes", ep, log], env=ctypes_env(),
                           capture_output=True, text=True, timeout=180)
        print(r.stdout, end="")
        check(r.returncode == 0, "libfp8d checks (ctypes): %s" % r.stderr.strip()[-2000:])
        phase("slow reader, cancel")

        # SIGHUP reopens the log file (logrotate moved it)
        os.rename(log, log + ".1")
        daemon.send_signal(signal.SIGHUP)
        check(wait_file(log, r"log reopened", 10) is not None, "SIGHUP: log not reopened")
        phase("SIGHUP")

        # SIGTERM mid-stream
        p = subprocess.Popen(long_gen, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check(read_until_output(p, 30), "shutdown: no output"):
            daemon.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
            check(p.returncode != 0 and b"shutting down" in err,
                  "shutdown: client rc %d, stderr %s" % (p.returncode, err))
            check(daemon.wait(timeout=30) == 0, "daemon exit status %s" % daemon.returncode)
            check(notify.wait("STOPPING=1", 5), "no STOPPING=1")
            with open(log + ".1") as f1, open(log) as f2:
                names = set(re.findall(r"/fp8d-[0-9a-f]{32}", f1.read() + f2.read()))
            check(len(names) >= N_CLIENTS // 2, "segments named in the log: %d" % len(names))
            left = [n for n in names if os.path.exists("/dev/shm" + n)]
            check(not left, "segments left in /dev/shm: %s" % left)
            check(not os.path.exists(ep[len("ipc://"):]), "socket file left behind")
        daemon = None
        phase("shutdown")

        # socket activation
        act = shutil.which("systemd-socket-activate")
        if not act:
            print("SKIP: socket activation (systemd-socket-activate not installed)")
        else:
            path = os.path.join(tmp, "act.sock")
            sa = subprocess.Popen([act, "-l", path, FP8D, "serve"] + common +
                                  ["--log-file", os.path.join(tmp, "act.log")],
                                  stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while not os.path.exists(path) and time.monotonic() < deadline:
                    time.sleep(0.02)
                r = subprocess.run([FP8, "--endpoint", "ipc://" + path, "--timeout", "60000",
                                    "generate", "--tokens", prompt_of(0)] + sampling(1000) +
                                   ["--json"], capture_output=True, text=True, timeout=90)
                if check(r.returncode == 0, "socket activation: %s" % r.stderr):
                    check(json.loads(r.stdout)["tokens"] == ref.get(0),
                          "socket activation: tokens differ")
            finally:
                sa.send_signal(signal.SIGTERM)
                check(sa.wait(timeout=30) == 0, "socket-activated daemon exit %s" % sa.returncode)
            phase("socket activation")
    except Exception:
        fail("exception: %s" % traceback.format_exc())
    finally:
        if fails:
            for name in ("daemon.log.1", "daemon.log"):
                try:
                    with open(os.path.join(tmp, name)) as f:
                        print("---- %s (last 40 lines)\n%s" % (name, "".join(f.readlines()[-40:])))
                except OSError:
                    pass
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if len(sys.argv) == 4 and sys.argv[1] == "--ctypes":
    ctypes_checks(sys.argv[2], sys.argv[3])
    sys.exit(1 if fails else 0)
main()
if fails:
    print("daemon e2e: %d failures" % len(fails))
    sys.exit(1)
print("daemon e2e: ok")
