"""The labelling app: projects, schemas, items, queues, quality control, learning and datasets."""
