// PLACEHOLDER: replaced by the real implementation.
export {};
