"""Training pipeline for the MasterX emotion model.

Run ``python -m services.emotion.training --data DATA_DIR --out services/emotion/model``
to train, calibrate, export, quantize, evaluate and write the model card.
"""
