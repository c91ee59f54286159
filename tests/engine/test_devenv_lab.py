"""JupyterLab as people use it: ``docker run -p 127.0.0.1:PORT:8888 IMAGE lab``, the printed
URL opened in a real browser (Debian's headless Chromium through selenium, nothing downloaded),
a notebook cell run in the kernel, which reports the locked PyTorch back.

The container runs the way README's dev-environment section documents for a locked-down
notebook: ``--read-only`` root, with only ``/tmp`` and the home (``/home/lockdock``) writable
(tmpfs here; a volume in real use). The image is the session's shared demo image
(tests/fixtures/images.py). Also: the server refuses a missing or wrong token, and the bad
inputs of ``lab`` (no token, unwritable home, port in use) give their documented messages.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.devtools import Browser
from tests.fixtures.images import DemoImage
from tests.helpers import docker

pytestmark = [pytest.mark.engine, pytest.mark.network]

HOME = "/home/lockdock"
PREFIX = "/opt/conda/envs/lockdock"
#: The read-only container of the documented locked-down lab (home + /tmp writable).
READ_ONLY = ["--read-only", "--tmpfs", "/tmp", "--tmpfs", f"{HOME}:uid=1000,gid=1000"]
#: Paths the kernel reports writability for: writable ones first, then the read-only ones.
PROBED = (HOME, "/tmp", PREFIX, "/usr", "/etc", "/")
CELL = ("import os, pwd, sys, torch; print('LOCKDOCK', torch.__version__, sys.prefix, "
        "os.getuid(), pwd.getpwuid(os.getuid()).pw_name, "
        f"*[f'{{p}}:{{os.access(p, os.W_OK)}}' for p in {PROBED!r}])")
WAIT = 180  # seconds for the server, the page and the kernel (2 shared cores, cold caches)


@dataclass(frozen=True)
class Lab:
    container: str
    port: int
    token: str
    image: DemoImage

    def url(self, path: str, token: str | None = None) -> str:
        query = f"?token={token}" if token is not None else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])




def request(url: str, *, method: str = "GET", token: str | None = None,
            body: object = None) -> tuple[int, str, str]:
    """(status, Location header, body) without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"token {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Location", ""), resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", ""), error.read().decode()


def locked_torch(root: Path) -> str:
    lock = yaml.safe_load((root / "conda-lock.yml").read_text())
    [torch] = {p["version"] for p in lock["package"] if p["name"] == "torch"}
    return str(torch)


@pytest.fixture(scope="module")
def lab(demo_image: DemoImage) -> Iterator[Lab]:
    name, port = f"lockdock-test-lab-{uuid.uuid4().hex[:8]}", free_port()
    started = docker("run", "-d", "--name", name, *READ_ONLY, "-p", f"127.0.0.1:{port}:8888",
                     demo_image.reference, "lab")
    assert started.returncode == 0, started.stderr
    try:
        token, deadline = None, time.monotonic() + WAIT
        while time.monotonic() < deadline:
            logs = docker("logs", name)
            found = re.search(r"open http://127\.0\.0\.1:8888/lab\?token=([0-9a-f]{48})",
                              logs.stderr)
            if found:
                token = found.group(1)
                try:
                    if request(f"http://127.0.0.1:{port}/api/status", token=token)[0] == 200:
                        break
                except OSError:  # the port is published before the server listens
                    pass
            if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                pytest.fail(f"lab exited:\n{logs.stdout}\n{logs.stderr}")
            time.sleep(1)
        else:
            pytest.fail(f"JupyterLab did not answer on {port}:\n{docker('logs', name).stderr}")
        assert token is not None
        yield Lab(name, port, token, demo_image)
    finally:
        docker("rm", "-f", name)


def test_lab_renders_in_chromium_and_the_kernel_reports_the_locked_torch(
    lab: Lab, browser: Browser, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import WebDriverWait

    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                   "outputs": [], "source": CELL}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    status, _, body = request(lab.url("/api/contents/locked.ipynb"), method="PUT",
                              token=lab.token, body={"type": "notebook", "content": notebook})
    assert status in (200, 201), body

    options = webdriver.ChromeOptions()
    options.binary_location = str(browser.binary)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(browser.driver)))
    try:
        driver.get(lab.url("/lab/tree/locked.ipynb", lab.token))  # the URL lab printed
        wait = WebDriverWait(driver, WAIT)
        wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "#jp-main-dock-panel")))
        cell = wait.until(until.element_to_be_clickable(
            (By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")))
        wait.until(lambda d: d.find_elements(
            By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"))
        output = None
        deadline = time.monotonic() + WAIT
        while output is None and time.monotonic() < deadline:
            # A dialog (kernel choice, a notice) takes the keys a person would answer first.
            for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):
                button.click()
            cell.click()  # what a person does: into the cell, Shift+Enter (again if lost)
            ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT) \
                .perform()
            try:
                output = WebDriverWait(driver, 30).until(until.presence_of_element_located(
                    (By.CSS_SELECTOR, ".jp-Notebook .jp-OutputArea-output")))
            except TimeoutException:
                cell = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")
        if output is None:
            driver.save_screenshot(str(tmp_path / "no-output.png"))
            pytest.fail(f"no cell output within {WAIT} s; page: {tmp_path / 'no-output.png'}")
        wait.until(lambda d: "LOCKDOCK" in output.text)
        reply = output.text.strip()
        shot = tmp_path / "jupyterlab.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    print(f"\nkernel reply: {reply}\nscreenshot: {shot}")
    assert shot.stat().st_size > 10_000
    words = reply.split()
    assert words[:5] == ["LOCKDOCK", locked_torch(lab.image.root), PREFIX, "1000", "lockdock"]
    writable = dict(word.rsplit(":", 1) for word in words[5:])
    assert writable == {HOME: "True", "/tmp": "True", PREFIX: "False", "/usr": "False",
                        "/etc": "False", "/": "False"}


def test_the_server_refuses_a_missing_or_wrong_token(lab: Lab) -> None:
    assert request(lab.url("/api/status"), token=lab.token)[0] == 200
    assert request(lab.url("/api/status"))[0] == 403
    assert request(lab.url("/api/status"), token="0" * 48)[0] == 403
    assert request(lab.url("/api/kernels"), method="POST", token="wrong", body={})[0] == 403
    for token in (None, "wrong"):
        status, location, _ = request(lab.url("/lab", token))
        assert status == 302 and location.startswith("/login"), (status, location)
    status, _, page = request(lab.url("/lab", lab.token))
    assert status == 200 and "JupyterLab" in page


def test_lab_refuses_an_empty_token(demo_image: DemoImage) -> None:
    for argument in ("--IdentityProvider.token=", "--no-token"):
        proc = docker("run", "--rm", demo_image.reference, "lab", argument)
        assert proc.returncode == 2, proc.stderr
        assert "never run JupyterLab without a token" in proc.stderr


def test_lab_with_a_read_only_home_says_what_to_mount(demo_image: DemoImage) -> None:
    proc = docker("run", "--rm", "--read-only", "--tmpfs", "/tmp", demo_image.reference, "lab")
    assert proc.returncode == 3, proc.stderr
    assert f"{HOME} is not writable" in proc.stderr and f"--tmpfs {HOME}:uid=1000" in proc.stderr


def test_a_port_in_use_is_named(lab: Lab) -> None:
    inside = docker("exec", lab.container, "lab")  # a second lab in the same container
    assert inside.returncode == 4, inside.stderr
    assert "port 8888 is already in use" in inside.stderr and "LAB_PORT" in inside.stderr
    # The host side is the engine's own check, before the container starts: it names the port.
    taken = docker("run", "--rm", "-p", f"127.0.0.1:{lab.port}:8888", lab.image.reference, "lab")
    assert taken.returncode != 0
    assert str(lab.port) in taken.stderr, taken.stderr
