"""nginx with the deploy example (deploy/hub/nginx-hub.conf) in front of a hub, for the
tests (tests/hub/test_nginx.py) and the load bench (bench/hub_load.py --nginx): a private
CA and the hub's certificate, the site file with only its addresses, ports and
certificate paths changed, and Debian's nginx run in the foreground."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from sync.synckit import private_ca, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


# The main file around the site file (Debian's /etc/nginx/nginx.conf does the same job):
# one process in the foreground, everything it writes in the test's folder. (A master
# with 2 workers measured slower here: on 2 cores they only compete with the rest.)
MAIN_CONFIG = """daemon off;
master_process off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 4096; }}  # a programme's boxes at once, and upstream
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    include {run}/site.conf;
}}
"""


def site_config(hub_port: int, http_port: int, https_port: int, cert: Path, key: Path) -> str:
    text = (ROOT / "deploy" / "hub" / "nginx-hub.conf").read_text()
    for pattern, replacement in [
        (r"server 127\.0\.0\.1:8090;", f"server 127.0.0.1:{hub_port};"),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen \[::\]:80;", ""),
        (r"listen 443 ssl( [^;]*)?;", rf"listen 127.0.0.1:{https_port} ssl\1;"),
        (r"listen \[::\]:443 ssl[^;]*;", ""),
        (r"ssl_certificate +\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key +\S+;", f"ssl_certificate_key {key};"),
    ]:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"deploy/hub/nginx-hub.conf: {pattern!r} found {count} times"
    return text


class Nginx:
    """The deploy example checked (``nginx -t``) and served from ``folder``."""

    def __init__(self, folder: Path, hub_port: int, http_port: int, https_port: int) -> None:
        self.ca, cert, key = private_ca(folder)
        self.https_port, self.http_port = https_port, http_port
        run = folder / "nginx"
        run.mkdir()
        (run / "site.conf").write_text(site_config(hub_port, http_port, https_port, cert, key))
        (run / "nginx.conf").write_text(MAIN_CONFIG.format(run=run))
        argv = [NGINX, "-p", str(run), "-c", str(run / "nginx.conf")]
        checked = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise AssertionError(f"nginx -t refused the deploy example: {checked.stderr}")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(https_port, 10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
