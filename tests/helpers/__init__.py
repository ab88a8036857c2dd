"""What several test layers share: a live cluster, a real Mosquitto, waiting on a condition."""
