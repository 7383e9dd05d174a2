"""The bundled accelerate launch config parses with accelerate's own loader and says what it promises."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from tau_train import accelerate_config


def test_multi_gpu_config():
    config = load_config_from_file(str(accelerate_config("multi_gpu")))
    assert (
        config.distributed_type == "MULTI_GPU"
        and config.num_processes == 8
        and config.num_machines == 1
        and config.mixed_precision == "bf16"
    )


def test_unknown_config_name():
    with pytest.raises(FileNotFoundError, match="fsdp"):
        accelerate_config("fsdp")  # FSDP2 is TrainConfig.fsdp, launched with multi_gpu
