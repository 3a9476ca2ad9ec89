public enum InterpPlaceholder {}
