"""vidscan: a gRPC service that ingests user videos for deepfake analysis."""
