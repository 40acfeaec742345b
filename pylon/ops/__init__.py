"""Operations: configuration, doctor, health and metrics endpoints, log formatting."""
