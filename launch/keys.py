"""CurveZMQ keys for publishers bound beyond loopback: `python -m launch.keys --out keys/ --clients laptop`.

Writes ZeroMQ certificates (`zmq.auth.create_certificates`) for one server and its clients:

    OUT/secret/<server>.key_secret   the publisher's secret certificate (mode 600)
    OUT/public/<server>.key          the publisher's public key: copy it to every subscriber's machine
    OUT/secret/<client>.key_secret   a subscriber's secret certificate (mode 600): to that machine only
    OUT/public/clients/<client>.key  a subscriber's public key: the publisher's authorized-clients directory

`--clients 3` makes client1, client2, client3; `--clients laptop robot` names them. Existing keys are not
overwritten unless `--force` is given (a new server key locks out every subscriber holding the old one).
"""

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro
import zmq
import zmq.auth


@dataclass
class KeysConfig:
    out: Path
    """Directory to write `secret/` and `public/` into (created if missing)."""
    name: str = "server"
    """Name of the publisher's (server's) certificate."""
    clients: tuple[str, ...] = ("client",)
    """Subscriber (client) certificates to make: a count (`3` makes client1..client3) or names."""
    force: bool = False
    """Overwrite certificates that already exist."""

    def __post_init__(self):
        if not self.clients:
            raise ValueError("`--clients` needs a count or at least one name")
        if len(self.clients) == 1 and self.clients[0].isdigit():
            count = int(self.clients[0])
            if count < 1:
                raise ValueError(f"`--clients` must be at least 1, got {count}")
            self.clients = tuple(f"client{i}" for i in range(1, count + 1))
        names = (self.name, *self.clients)
        for name in names:
            if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
                raise ValueError(f"certificate names are letters, digits, - _ . (no leading .), got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"certificate names must differ, got {list(names)}")


@dataclass(frozen=True)
class KeyFiles:
    server_secret: Path
    server_public: Path
    clients_dir: Path
    client_secrets: dict[str, Path]


def make_keys(cfg: KeysConfig) -> KeyFiles:
    """Create the certificates; raises FileExistsError rather than overwrite without `force`."""
    secret_dir, public_dir = cfg.out / "secret", cfg.out / "public"
    clients_dir = public_dir / "clients"
    files = KeyFiles(
        server_secret=secret_dir / f"{cfg.name}.key_secret",
        server_public=public_dir / f"{cfg.name}.key",
        clients_dir=clients_dir,
        client_secrets={c: secret_dir / f"{c}.key_secret" for c in cfg.clients},
    )
    targets = [files.server_secret, files.server_public]
    targets += [p for c in cfg.clients for p in (secret_dir / f"{c}.key_secret", clients_dir / f"{c}.key")]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not cfg.force:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --force to replace them")
    for d in (secret_dir, public_dir, clients_dir):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(secret_dir, 0o700)
    with tempfile.TemporaryDirectory(dir=cfg.out) as tmp:  # same file system: moves are renames
        os.chmod(tmp, 0o700)
        for name, public_to in ((cfg.name, public_dir), *((c, clients_dir) for c in cfg.clients)):
            public, secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(secret, 0o600)
            shutil.move(secret, secret_dir / Path(secret).name)
            shutil.move(public, public_to / Path(public).name)
    return files


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(KeysConfig, args=argv, description=__doc__)
    if not zmq.has("curve"):
        print("launch.keys: this libzmq has no CURVE support; install a pyzmq wheel", file=sys.stderr)
        return 1
    try:
        files = make_keys(cfg)
    except FileExistsError as exc:
        print(f"launch.keys: {exc}", file=sys.stderr)
        return 1
    print(f"publisher (on the machine that binds):\n  secret   {files.server_secret}")
    print(f"  clients  {files.clients_dir}/  (add or remove a subscriber by its public .key file here)")
    print(
        "  Publisher(endpoint, source, curve=CurveServer(\n"
        f"      secret_key_file=Path({str(files.server_secret)!r}),\n"
        f"      authorized_clients_dir=Path({str(files.clients_dir)!r})))"
    )
    for client, secret in files.client_secrets.items():
        print(f"subscriber {client} (copy both files to its machine; the secret to that one only):")
        print(f"  secret   {secret}\n  server   {files.server_public}")
        print(
            "  Subscriber(endpoints, topics, curve=CurveClient(\n"
            f"      secret_key_file=Path({str(secret)!r}),\n"
            f"      server_public_key_file=Path({str(files.server_public)!r})))"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
