"""The bundled accelerate launch configs parse with accelerate's own loader and say what they promise."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from tau_train import accelerate_config


def test_ddp_config():
    config = load_config_from_file(str(accelerate_config("ddp")))
    assert (
        config.distributed_type == "MULTI_GPU"
        and config.num_processes == 8
        and config.mixed_precision == "bf16"
    )


def test_fsdp_config_is_fsdp2_with_full_state_dict():
    config = load_config_from_file(str(accelerate_config("fsdp")))
    assert config.distributed_type == "FSDP"
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_unknown_config_name():
    with pytest.raises(FileNotFoundError, match="deepspeed"):
        accelerate_config("deepspeed")
