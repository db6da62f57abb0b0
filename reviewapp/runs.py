"""Where a round's files are: RUNS_ROOT/round-<id>, laid out by ml (ml.api.RunFolder names every
file in it), and how a round's folder is told from a leftover of another database.

Neither a service nor a selector: the round pipeline writes these files, the relabel search
reads them, and both find them here. RUNS_ROOT must be shared by all workers that serve the
rounds queue, and by the web processes for the relabel search.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

from ml.api import RunFolder

from .models import Round


def round_run_folder(round_id: int) -> RunFolder:
    return RunFolder(Path(settings.RUNS_ROOT) / f"round-{round_id}")


def round_key(round_: Round) -> str:
    """Tells this round's run folder from a leftover of another database (ids get reused)."""
    return f"{round_.pk}:{round_.created_at.isoformat()}"


def round_search_embeddings(round_: Round) -> Path:
    """The embeddings file the relabel search reads for `round_`, rows in its snapshot's order
    (RunFolder.search_embeddings): an "embeddings" round without an extraction reads the file it
    was given."""
    given = round_.config.get("embeddings", "") if round_.method == Round.Method.EMBEDDINGS else None
    return round_run_folder(round_.pk).search_embeddings(given)
