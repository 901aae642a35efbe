"""The examples in `examples/`, run as a newcomer runs them: every `sh`
block of each example's README, in order, verbatim, with the AWS CLI, in a
copy of the example's directory.

Three things differ from a newcomer's terminal, all said here: the
endpoint `http://127.0.0.1:9070` is the test server's, `nimbus` on PATH is
the binary under test, and `sleep` follows the test server's compressed
schedule clock (`--schedule-time-scale`), so a minute of schedule time
passes in a second.
"""

import os
import re
import shutil
import subprocess

import pytest

from conftest import ACCESS_KEY, REGION, REPO, SECRET_KEY, wait_for

EXAMPLES = REPO / "examples"
TIME_SCALE = 60


def readme_blocks(example):
    text = (EXAMPLES / example / "README.md").read_text()
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def run_readme(example, server, workdir, blocks=slice(None)):
    """Runs the README's `sh` blocks (those `blocks` selects) in one bash
    session; returns its output. Fails with the output on any error."""
    shutil.copytree(EXAMPLES / example, workdir, dirs_exist_ok=True)
    bindir = workdir / ".bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "nimbus").exists():
        (bindir / "nimbus").symlink_to(server.binary.resolve())
    blocks = readme_blocks(example)[blocks]
    script = "\n".join(blocks).replace("http://127.0.0.1:9070", server.url)
    prelude = (
        "set -euo pipefail\n"
        f'sleep() {{ command sleep "$(python3 -c "print($1 / {TIME_SCALE})")"; }}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # What `~/.local/share/nimbus/credentials` would hold for this server.
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_CONFIG_FILE="/dev/null", AWS_PAGER="",
               PATH=f"{bindir}:{os.environ['PATH']}")
    p = subprocess.run(["bash", "-c", prelude + script], cwd=workdir, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"README of {example} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_s3_thumbnail(own_server, tmp_path):
    srv = own_server()
    work = tmp_path / "s3-thumbnail"
    out = run_readme("s3-thumbnail", srv, work, slice(0, -1))
    assert re.search(r"^s3 +arn:aws:s3:::photos +s3:ObjectCreated:\* +ENABLED +-$", out, re.M), out
    # The thumbnail the README downloads is half the 640x480 original.
    assert "(320, 240)" in out, out
    assert "resized s3://photos/HappyFace.jpg into s3://photos-resized/resized-HappyFace.jpg" in out, out
    # The first (the environment) and last (clean-up) blocks: both buckets
    # emptied and removed.
    last = len(readme_blocks("s3-thumbnail")) - 1
    run_readme("s3-thumbnail", srv, work, slice(0, None, last))
    s3 = srv.client("s3")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "photos" not in names and "photos-resized" not in names


def test_cron_job(own_server, tmp_path):
    srv = own_server(args=["--schedule-time-scale", str(TIME_SCALE)])
    # Everything but the clean-up: the function, the rule, the Scheduler
    # schedule, and the log query that shows the runs.
    out = run_readme("cron-job", srv, tmp_path / "cron-job", slice(0, -1))
    assert "cron job run for tick" in out, out
    logs = srv.client("logs")

    def runs():
        events = logs.filter_log_events(logGroupName="/aws/lambda/cron-job",
                                        filterPattern="cron job run")["events"]
        return [e["message"] for e in events]

    # Both the rule and the schedule go on firing, once a (compressed) minute.
    wait_for(lambda: sum("Scheduled Event" in m for m in runs()) >= 3 and
             any("from the scheduler" in m for m in runs()), timeout=30,
             what="three rule ticks and a scheduler run")
    ticks = [re.search(r"tick (\S+) \(Scheduled Event", m).group(1)
             for m in runs() if "Scheduled Event" in m]
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
    # The README's first (the environment) and last (clean-up) blocks.
    run_readme("cron-job", srv, tmp_path / "cron-job", slice(0, None, len(readme_blocks("cron-job")) - 1))
    assert srv.client("events").list_rules()["Rules"] == []
    assert srv.client("scheduler").list_schedules()["Schedules"] == []
