"""Proof that a member's images never leave it: everything its SuperNode and ClientApps
send during a real run is captured on the wire and searched for the images' content.

The capture is a TCP proxy on loopback between the member and the coordinator's front, in
a plain-text federation (`--insecure`), so that the bytes are readable: with TLS the same
bytes travel encrypted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from fractofl.core.wire.packing import MAGIC
from tests.federation.conftest import SMALL_RUN, member_images
from tests.federation.image_traces import find_image_traces, image_representations
from tests.federation.processes import Processes, fractofl, free_ports
from tests.federation.recording_proxy import RecordingProxy

pytestmark = pytest.mark.slow


def test_nothing_a_member_sends_contains_its_images(member_data: Path, tmp_path: Path) -> None:
    # Prepare: a plain-text coordinator; member 0 reaches its front only through the proxy
    # Every port picked together: a member's port picked after `up` started could be the
    # SuperLink's, not bound yet (it happened: that member's SuperNode could not start).
    port, superlink_port, *member_ports = free_ports(4)
    deployment = [
        f"deployment.state_dir={tmp_path / 'coordinator'}",
        f"deployment.front_port={port}",
        f"deployment.superlink_port={superlink_port}",
        "deployment.superlink_store=memory",  # a plain-text federation may use Flower's
    ]
    processes = Processes()
    try:
        processes.start(
            fractofl("coordinator", "up", "--insecure", *deployment), tmp_path / "up.log", tmp_path
        )
        with RecordingProxy(("127.0.0.1", port)) as proxy:
            for member, address in ((0, proxy.port), (1, port)):
                processes.start(
                    fractofl(
                        "member",
                        "join",
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{address}",
                        "--data",
                        str(member_images(member_data, member)),
                        "--port",
                        str(member_ports[member]),
                        f"deployment.member_dir={tmp_path / f'member{member}'}",
                    ),
                    tmp_path / f"member{member}.log",
                    tmp_path,
                )
            # Execute: one round of training and evaluation
            run = subprocess.run(
                fractofl(
                    "coordinator",
                    "run",
                    *deployment,
                    f"data.root={member_data}",
                    f"output.root={tmp_path / 'runs'}",
                    "output.name=proof",
                    f"registry.root={tmp_path / 'registry'}",
                    f"registry.private_key={tmp_path / 'keys' / 'c.key'}",
                    f"registry.public_key={tmp_path / 'keys' / 'c.pub'}",
                    "federation.members=3",  # the data set's; 2 of them join
                    "federation.rounds=1",
                    *SMALL_RUN,
                ),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            sent = proxy.sent
    finally:
        processes.stop_all()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Assert: the capture saw the member's traffic, its update included...
    images = sorted(p for p in member_images(member_data, 0).rglob("*") if p.is_file())
    assert len(images) > 20
    assert sent.count(b"POST /v1/fleet/") > 10
    assert b"train-loss" in sent and b"num-examples" in sent
    assert MAGIC in sent  # the update left packed (updates.pack_arrays), searched as such
    # ...and no file content, no pixels and no float pixels of any of the member's images
    assert find_image_traces(sent, images) == []
    # The search finds what it looks for: one image's float pixels mixed into the capture
    leaked = image_representations(images[0])["float32 pixels"]
    middle = len(leaked) // 2
    spiked = sent[: len(sent) // 2] + leaked[middle : middle + 200] + sent[len(sent) // 2 :]
    assert find_image_traces(spiked, images[:1]) == [f"{images[0].name}: float32 pixels"]
    assert np.frombuffer(leaked, np.float32).max() <= 1.0
