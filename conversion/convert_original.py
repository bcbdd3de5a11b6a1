"""Convert an original authors' checkpoint, or a transformers port's, into a vl_zoo model folder.

    python conversion/convert_original.py --model {vilbert,lxmert,vl-bert,visualbert,uniter,hf-lxmert,hf-visualbert} \
        --checkpoint CKPT [--config ORIGINAL_CONFIG] --output DIR [--tokenizer TOKENIZER_DIR] [--overwrite]

The container (flat state dict, `module.` prefixes, `{'state_dict', 'optimizer'}` bundles, float16) is detected
and unwrapped. The folder holds config.json, model.safetensors, processor_config.json, README.md and
conversion_report.json; see vl_zoo/conversion/originals/cli.py.
"""

from vl_zoo.conversion.originals.cli import main

if __name__ == "__main__":
    main()
