"""Convert a checkpoint of the unified-framework release (e-bug/volta) into a vl_zoo model folder.

    python conversion/convert_volta.py --checkpoint pytorch_model_9.bin --config ctrl_vilbert_base.json --output DIR

The folder holds config.json, model.safetensors and conversion_report.json (every source key, where it went
or why it was dropped). Load it with `AutoModelForPreTraining.from_pretrained(DIR)` after `import vl_zoo`.
"""

from vl_zoo.conversion.volta import main

if __name__ == "__main__":
    main()
