"""Run one build in a subprocess (the SIGKILL resume test kills this process). Holds no tests."""

import json
import sys

if __name__ == "__main__":
    from safethink.synth import BuildConfig, build_dataset

    cfg = BuildConfig.model_validate(json.loads(sys.argv[1]))
    build_dataset(cfg, sys.argv[2], cache_dir=sys.argv[3])
