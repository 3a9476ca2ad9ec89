public enum LlamaPlaceholder {}
