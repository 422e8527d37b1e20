"""Where news statements come from: page addresses, outlets, and the held-out page list.

The team keeps some news pages back for evaluation and publishes them only as SHA-256 hashes of
the normalised address (`../shared/heldout_sources.sha256`; a copy ships as
`data/heldout_sources.sha256` so a clone without `shared/` checks the same). Any statement
restated from such a page would leak the evaluation, so `kazstance data check` refuses it.
Outlets are grouped into families (`kaz.zakon.kz` and `zakon.kz` are one newsroom) so that the
news test split can hold newsrooms that training never saw.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELDOUT_FILES = (REPO / "data" / "heldout_sources.sha256", REPO.parent / "shared" / "heldout_sources.sha256")

# Second-level zones under which the registrable name has three labels (e.g. gov.kz, com.kz).
_ZONES = {"com", "org", "gov", "edu", "net", "co", "ac"}


def normalise_url(url: str) -> str:
    """The held-out list's normalisation: trim, lowercase, drop scheme, query/fragment, www., trailing /."""
    u = str(url).strip().lower()
    u = re.sub(r"^[a-z][a-z0-9+.-]*://", "", u)
    u = re.split(r"[?#]", u, maxsplit=1)[0]
    if u.startswith("www."):
        u = u[4:]
    return u.rstrip("/")


def url_hash(url: str) -> str:
    return hashlib.sha256(normalise_url(url).encode("utf-8")).hexdigest()


def load_heldout(files: tuple[Path, ...] | list[Path] = HELDOUT_FILES) -> set[str]:
    """The union of the hashes in every held-out list that exists (comment lines skipped)."""
    hashes: set[str] = set()
    for path in files:
        if Path(path).is_file():
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    hashes.add(line.lower())
    return hashes


def outlet_family(outlet_or_url: str) -> str:
    """The newsroom a site belongs to: its registrable domain (kaz.tengrinews.kz -> tengrinews.kz)."""
    host = normalise_url(outlet_or_url).split("/", 1)[0].split(":", 1)[0]
    labels = [part for part in host.split(".") if part]
    keep = 3 if len(labels) >= 3 and labels[-2] in _ZONES else 2
    return ".".join(labels[-keep:])
