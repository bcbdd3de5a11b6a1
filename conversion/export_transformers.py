"""Write a vl_zoo LXMERT or VisualBERT model folder as a folder transformers' own classes load.

    python conversion/export_transformers.py --model VL_ZOO_DIR --output DIR [--overwrite]

LXMERT -> LxmertForPreTraining / LxmertForQuestionAnswering / LxmertModel; VisualBERT -> VisualBertForPreTraining /
VisualBertModel. See vl_zoo/conversion/export.py.
"""

from vl_zoo.conversion.export import main

if __name__ == "__main__":
    main()
