"""``hf://`` specs: a file of a Hugging Face Hub repository, through
``huggingface_hub.hf_hub_download`` and its own cache (``HF_HOME`` / ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, branch / tag / commit revisions). ``huggingface_hub`` is
imported only when such a spec is resolved; each of its failures becomes one
:class:`SourceError` naming the spec and what to do.
"""

from __future__ import annotations

from pathlib import Path

from abdnet.hub.settings import OFFLINE_ENV, client_version
from abdnet.hub.sources import HubSource, SourceError

__all__ = ["resolve_hub"]


def resolve_hub(source: HubSource, *, offline: bool) -> Path:
    """The local copy of the Hub file ``source`` (``offline``: from the cache only)."""
    # huggingface_hub is imported only for hf:// specs: it is not needed otherwise.
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            source.repo_id,
            source.filename,
            revision=source.revision,
            local_files_only=offline,
            library_name="abdnet",
            library_version=client_version(),
        )
    except hf_errors.LocalEntryNotFoundError:
        why = (
            f"{OFFLINE_ENV} is set"
            if offline
            else "the Hub cannot be reached (no network, or HF_HUB_OFFLINE is set)"
        )
        raise SourceError(
            f"{source}: not in the Hugging Face cache and {why}; run once with network access"
        ) from None
    except hf_errors.GatedRepoError:
        raise SourceError(
            f"{source}: {source.repo_id} is gated: accept its terms on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise SourceError(
            f"{source}: repository {source.repo_id} not found (or private: log in with "
            "`hf auth login` or set HF_TOKEN)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise SourceError(
            f"{source}: revision {source.revision!r} not found in {source.repo_id}"
        ) from None
    except hf_errors.EntryNotFoundError:
        raise SourceError(
            f"{source}: no file {source.filename!r} in {source.repo_id}"
            + (f" at revision {source.revision}" if source.revision else "")
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise SourceError(f"{source}: {exc}") from None
    return Path(path)
