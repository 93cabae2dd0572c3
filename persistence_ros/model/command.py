"""``persistence-ros train tokenizer|classifier`` (wired into the CLI by cli.py)."""

import argparse
import json
import logging
import sys

from persistence_ros.model.checkpoint import CheckpointError
from persistence_ros.model.config import load_config
from persistence_ros.model.train import NothingToTrain, STAGES, train
from persistence_ros.overrides import parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training arguments to ``parser``."""
    parser.add_argument('stage', choices=STAGES, help='what to train')
    parser.add_argument('--config', default='cpu',
                        help='model config YAML, or a built-in name (cpu, gpu)')
    parser.add_argument('--data', required=True, help='data set directory (manifest.json)')
    parser.add_argument('--out', required=True, help='checkpoint directory')
    parser.add_argument('--resume', action='store_true', help='resume from OUT/last')
    parser.add_argument('--epochs', type=int, default=None, help='override train.epochs')
    parser.add_argument('--device', default='cpu',
                        help='cpu, cuda[:N] or auto (cuda when torch sees a GPU)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tokenizer', default=None,
                        help='classifier stage: initialise the tokenizer from this checkpoint')
    parser.add_argument('--max-steps', type=int, default=None, help='stop after N steps')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config field, e.g. classifier.fusion=cross_attention '
                             '(VALUE is read as YAML; repeatable)')


def main(args: argparse.Namespace) -> int:
    """
    Run training; return the process exit status.

    2 with a one-line message on stderr for a bad option, config, data set, device or
    checkpoint; 0 with a message on stderr when there is nothing to train (``--epochs 0``,
    or ``--resume`` of a run that is done).
    """
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        for name in ('epochs', 'max_steps'):
            value = getattr(args, name)
            if value is not None and value < 0:
                raise ValueError(f'--{name.replace("_", "-")} must be >= 0, got {value}')
        config = load_config(args.config, parse_overrides(args.set))
        metrics = train(args.stage, config, args.data, args.out, epochs=args.epochs,
                        device=args.device, seed=args.seed, resume=args.resume,
                        max_steps=args.max_steps, progress=not args.no_progress,
                        tokenizer_checkpoint=args.tokenizer)
    except NothingToTrain as why:
        print(f'persistence-ros train: nothing to train: {why}', file=sys.stderr)
        return 0
    except (OSError, ValueError, CheckpointError) as error:
        print(f'persistence-ros train: error: {error}', file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == '__main__':
    _parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
