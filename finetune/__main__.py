"""``python -m finetune`` is the ``finetune`` command."""

from finetune.cli import main

raise SystemExit(main())
