DROP TABLE enrollment_tokens;
