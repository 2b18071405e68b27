"""The reserved token ids every zoo tokenizer, data pipeline, loss and decoder agree on.

    0 <pad>   padding; the loss ignores label 0
    1 <unk>   anything outside the vocabulary
    2 <bos>   start of a sentence (line corpora only); [CLS] for the BERT-style encoders
    3 <eos>   end of a sentence (line corpora only); [SEP] for the BERT-style encoders

A module of plain constants, so that the backend-portable Keras core (models, losses) can use them
without importing TensorFlow (the tokenizers themselves are TensorFlow modules).
"""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
NUM_SPECIAL = len(SPECIAL_TOKENS)

# The BERT-style encoders frame sentences as [CLS] s1 [SEP] s2 [SEP] with the same two ids.
CLS_ID = BOS_ID
SEP_ID = EOS_ID
