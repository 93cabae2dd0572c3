"""Checkpoints: safetensors weights + a JSON metadata file beside them; never unpickles."""

import datetime
import hashlib
import json
from pathlib import Path
import platform
from typing import Any, Dict, Optional, Tuple, Union

from safetensors import safe_open, SafetensorError
from safetensors.torch import load_file, save_file
import torch

from persistence_ros.model.config import ModelConfig
from persistence_ros.model.model import PersistenceModel

FORMAT = 'persistence_ros.model'
FORMAT_VERSION = 1
METADATA_SHA256 = 'metadata_sha256'  # safetensors header key: sha256 of the JSON beside it
PathLike = Union[str, Path]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match its configuration."""


def _paths(path: PathLike) -> Tuple[Path, Path]:
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / 'model.safetensors'
    return path, path.with_suffix('.json')


def _version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: B902 - any failure means "unknown"
        return 'unknown'


def versions() -> Dict[str, str]:
    """Return the versions of the packages a checkpoint depends on."""
    return {'torch': torch.__version__, 'persistence_ros': _version('persistence_ros'),
            'vector_quantize_pytorch': _version('vector-quantize-pytorch'),
            'safetensors': _version('safetensors'), 'python': platform.python_version()}


def file_sha256(path: PathLike) -> str:
    """Return the sha256 hex digest of a file (e.g. a data set's manifest.json)."""
    with open(path, 'rb') as stream:
        return hashlib.file_digest(stream, 'sha256').hexdigest()


def save_tensors(tensors: Dict[str, torch.Tensor], path: PathLike,
                 metadata: Dict[str, Any]) -> Path:
    """
    Write tensors as safetensors and ``metadata`` as JSON beside them; return the path.

    Each file is written under a temporary name and renamed into place; the safetensors
    header holds the sha256 of the JSON, so a reader can tell when a save was interrupted
    between the two renames (the weights of one save beside the metadata of another).
    """
    weights, meta_path = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in tensors.items()}
    text = json.dumps(metadata, indent=2, sort_keys=True, default=_json_default)
    meta_tmp = meta_path.with_name(meta_path.name + '.tmp')
    meta_tmp.write_text(text, encoding='utf-8')
    tmp = weights.with_name(weights.name + '.tmp')
    save_file(tensors, str(tmp), metadata={'format': FORMAT, METADATA_SHA256: _sha256(text)})
    tmp.replace(weights)
    meta_tmp.replace(meta_path)
    return weights


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _json_default(value):
    if hasattr(value, 'item'):
        return value.item()
    return str(value)


def load_tensors(path: PathLike, device: str = 'cpu'
                 ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read safetensors weights and their JSON metadata; raise CheckpointError on any failure."""
    weights, meta_path = _paths(path)
    if not weights.exists():
        raise CheckpointError(f'checkpoint weights not found: {weights}')
    if not meta_path.exists():
        raise CheckpointError(f'checkpoint metadata not found: {meta_path}')
    try:
        tensors = load_file(str(weights), device=device)
        with safe_open(str(weights), framework='pt') as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f'{weights} is not a valid safetensors file '
                              f'(pickled checkpoints are refused): {exc}') from exc
    try:
        text = meta_path.read_text(encoding='utf-8')
        metadata = json.loads(text)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f'{meta_path} is not valid JSON: {exc}') from exc
    expected = header.get(METADATA_SHA256)  # absent in files written before it existed
    if expected is not None and expected != _sha256(text):
        raise CheckpointError(f'{weights} and {meta_path} come from different saves (a save was '
                              'interrupted, or the JSON edited); use another checkpoint')
    return tensors, metadata


def model_metadata(model: PersistenceModel, metrics: Optional[Dict] = None,
                   data_manifest: Optional[PathLike] = None,
                   extra: Optional[Dict] = None) -> Dict[str, Any]:
    """Return the JSON metadata of a model checkpoint."""
    meta = {'format': FORMAT, 'format_version': FORMAT_VERSION,
            'config': model.config.to_dict(), 'versions': versions(),
            'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'metrics': metrics or {}, 'data_manifest_sha256': None}
    if data_manifest is not None:
        meta['data_manifest_sha256'] = file_sha256(data_manifest)
    if extra:
        meta.update(extra)
    return meta


def save_model(model: PersistenceModel, path: PathLike, metrics: Optional[Dict] = None,
               data_manifest: Optional[PathLike] = None, extra: Optional[Dict] = None) -> Path:
    """Save a model as ``path`` (.safetensors, or DIR/model.safetensors) plus ``.json``."""
    module = model.module if hasattr(model, 'module') else model
    return save_tensors(module.state_dict(), path,
                        model_metadata(module, metrics, data_manifest, extra))


def check_state(expected: Dict[str, torch.Tensor], found: Dict[str, torch.Tensor],
                where: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f'{k}: checkpoint {tuple(found[k].shape)} vs model '
                    f'{tuple(expected[k].shape)}' for k in set(expected) & set(found)
                    if tuple(found[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        raise CheckpointError(f'{where} does not match its configuration: missing {missing}, '
                              f'unexpected {unexpected}, shape mismatches {shapes}')


def load_model(path: PathLike, device: str = 'cpu') -> PersistenceModel:
    """Return the model saved at ``path`` (config from the JSON), in eval mode."""
    tensors, metadata = load_tensors(path, device)
    if metadata.get('format') != FORMAT:
        raise CheckpointError(f'{path}: metadata format {metadata.get("format")!r} is not '
                              f'{FORMAT!r}')
    if int(metadata.get('format_version', -1)) > FORMAT_VERSION:
        raise CheckpointError(f'{path}: format_version {metadata["format_version"]} is newer '
                              f'than this code ({FORMAT_VERSION})')
    try:
        config = ModelConfig.from_dict(metadata['config'])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f'{path}: bad config in metadata: {exc}') from exc
    model = PersistenceModel(config).to(device)
    state = model.state_dict()
    check_state(state, tensors, str(path))
    model.load_state_dict(tensors, strict=True)
    return model.eval()
