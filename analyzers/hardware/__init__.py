"""What the hardware can do: datasheet peaks per device and dtype, dtype sizes, FLOPs and bytes per op."""
