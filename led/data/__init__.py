"""Summarization data: sources (Hub, local files, prepared directories), checks that explain bad data, the tokenised
cache, batching, and the LightningDataModule that ties them together (`led.data.datamodule.SummarizationDataModule`)."""
