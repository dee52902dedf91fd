-- How each upload was read: its encoding, its delimiter and which of its columns fed each lead field (first and
-- last name into `name`, city and country into `location`, ...), shown in the upload's report. `{}` for
-- uploads stored before this was recorded.
alter table uploads add column source text not null default '{}';
