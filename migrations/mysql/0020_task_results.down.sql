DROP TABLE job_recaps;
DROP TABLE job_task_results;
