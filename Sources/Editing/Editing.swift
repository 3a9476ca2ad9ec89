public enum EditingPlaceholder {}
