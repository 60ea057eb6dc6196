"""``python -m pipecat_telnyx_tts.emulator``: serve the emulator until SIGINT or SIGTERM."""

from pipecat_telnyx_tts.emulator.cli import main

raise SystemExit(main())
