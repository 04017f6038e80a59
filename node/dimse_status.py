"""DIMSE status codes the node answers with, named after PS3.4 (Annex B Storage, Annex C.4 Verification)."""
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700                    # Refused: Out of Resources (disk full, unwritable)
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900   # Error: Data Set does not match SOP Class
PROCESSING_FAILURE = 0x0110                  # Failure: Processing failure (PS3.7 C.4: an internal error)
CANNOT_UNDERSTAND = 0xC000                   # Error: Cannot understand (undecodable / truncated dataset)
